// Drives Debian's Chromium with playwright-core for the tests of tests/integration/chromium.py.
// One JSON command per line on stdin ({"id", "op", ...}); one JSON answer per line on stdout
// ({"id", "ok", "value"} or {"id", "ok": false, "error"}). Dialogs (confirm) are accepted and recorded.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

let context;
let page;
const dialogs = [];
const consoleErrors = [];
const requested = [];  // every URL the pages asked for (a test can check they stay on loopback)

const ops = {
  async launch({ executable, userDataDir, width = 1280, height = 900 }) {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: executable,
      headless: true,
      chromiumSandbox: false,
      viewport: { width, height },
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    context.on("request", (request) => requested.push(request.url()));
    page = context.pages()[0] ?? (await context.newPage());
    page.on("dialog", async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.accept();
    });
    page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
    page.on("pageerror", (err) => consoleErrors.push(String(err)));
    return true;
  },
  async grant({ origin }) {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
    return true;
  },
  async goto({ url }) {
    const response = await page.goto(url);
    return { status: response ? response.status() : null, url: page.url() };
  },
  async reload() {
    const response = await page.reload();
    return { status: response ? response.status() : null, url: page.url() };
  },
  async fill({ selector, value }) { await page.fill(selector, value); return true; },
  async type({ selector, value }) { await page.locator(selector).pressSequentially(value); return true; },
  async select({ selector, value }) { return await page.selectOption(selector, value); },
  async click({ selector }) { await page.click(selector); return page.url(); },
  // a click that loads another page (a link, a form): waits for it
  async navigate({ selector }) {
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
    return page.url();
  },
  async text({ selector }) { return await page.locator(selector).first().innerText(); },
  async visible({ selector }) {
    return await page.locator(selector).evaluateAll((els) => els.filter((e) => e.offsetParent !== null).map((e) => e.innerText));
  },
  // waits for a condition, never for a time: an element in a state, or an expression to be truthy
  async wait({ selector, state = "visible", timeout = 30000 }) {
    await page.locator(selector).first().waitFor({ state, timeout });
    return true;
  },
  async until({ expression, timeout = 30000 }) {
    return await (await page.waitForFunction(expression, null, { timeout, polling: 100 })).jsonValue();
  },
  async press({ selector, key }) { await page.press(selector, key); return true; },
  async html() { return await page.content(); },
  async url() { return page.url(); },
  async evaluate({ expression }) { return await page.evaluate(expression); },
  async cookies() { return await context.cookies(); },
  async screenshot({ path, fullPage = true }) { await page.screenshot({ path, fullPage }); return path; },
  async dialogs() { return dialogs.splice(0); },
  async errors() { return consoleErrors.splice(0); },
  async requests() { return requested.splice(0); },
  async viewport({ width, height }) { await page.setViewportSize({ width, height }); return true; },
  async close() { await context?.close(); return true; },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  try {
    const value = await ops[op](args);
    process.stdout.write(JSON.stringify({ id, ok: true, value }) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ id, ok: false, error: String(err?.stack ?? err) }) + "\n");
  }
  if (op === "close") break;
}
process.exit(0);
