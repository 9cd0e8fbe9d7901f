// aikeys web pages: small enhancements; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filter keys as you type (the form still filters on the server without JavaScript).
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const table = document.getElementById(input.dataset.filter);
    const count = document.getElementById("filter-count");
    if (!table) continue;
    const rows = Array.from(table.tBodies[0].rows).filter((r) => r.dataset.search !== undefined);
    const apply = () => {
      const needle = input.value.trim().toLowerCase();
      let shown = 0;
      for (const row of rows) {
        const match = !needle || row.dataset.search.includes(needle);
        row.hidden = !match;
        if (match) shown += 1;
      }
      if (count) count.textContent = `${shown} of ${rows.length} keys`;
    };
    input.addEventListener("input", apply);
    input.form?.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
    apply();
  }

  // Copy buttons: data-copy names the element whose text is copied.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const status = document.querySelector(".copied");
      if (!source) return;
      const text = source.textContent;
      try {
        await navigator.clipboard.writeText(text);
        if (status) status.textContent = "Copied to the clipboard.";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (status) status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    });
  }

  // Confirmation before revoking or rotating (without JavaScript, the server asks on its own page).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        return;
      }
      const field = form.querySelector("input[name=confirm]");
      if (field) field.value = "yes";
    });
  }

  // Namespace pickers switch at once.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
});
