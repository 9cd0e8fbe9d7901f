#!/usr/bin/env bash
# What the web pages' browser test drives: Debian's `chromium` (apt-get, when missing; nothing ever
# downloads a browser build) and the npm package playwright-core (tests/browser/package.json, pinned
# with its integrity hash), installed with `npm ci` into ${AIKEYS_CACHE:-~/.cache/aikeys}/node/<hash>/
# only when that folder is missing. Prints the folder on stdout; `--print-dir` only prints it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/tests/browser
cache=${AIKEYS_CACHE:-$HOME/.cache/aikeys}
hash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
dir=$cache/node/$hash

if [[ ${1:-} == --print-dir ]]; then
  echo "$dir"
  exit 0
fi
say() { echo "[aikeys setup] $*" >&2; }
sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo

need=()
[[ -x /usr/bin/chromium ]] || need+=(chromium fonts-dejavu-core)
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then
  say "installing Debian packages: ${need[*]}"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ -f $dir/.complete ]]; then
  echo "$dir"
  exit 0
fi
say "playwright-core for the browser test (npm ci) into $dir"
mkdir -p "$cache/node"
tmp=$(mktemp -d "$cache/node/.partial-$hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=warn) >&2
touch "$tmp/.complete"
if ! mv -T "$tmp" "$dir" 2>/dev/null; then
  if [[ ! -f $dir/.complete ]]; then
    rm -rf "$dir"
    mv -T "$tmp" "$dir"
  fi
fi
echo "$dir"
