#!/usr/bin/env bash
# The Node packages the real-client tests drive (tests/clients/package.json, pinned with integrity
# hashes by its package-lock.json): the OpenAI Node SDK, the Vercel AI SDK, Codex CLI, OpenCode and Kilo Code.
#
# Installed with `npm ci` from the npm registry into ${AIKEYS_CACHE:-~/.cache/aikeys}/node/<hash>/,
# <hash> being that of package.json + package-lock.json, so a changed lockfile gets a new folder and
# an unchanged one is never installed twice. No install scripts run (the packages ship their native
# binaries as platform packages; .npmrc says ignore-scripts). Progress goes to stderr; the folder is
# printed on stdout. `--print-dir` only prints the folder, installed or not.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/tests/clients
cache=${AIKEYS_CACHE:-$HOME/.cache/aikeys}
hash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
dir=$cache/node/$hash

if [[ ${1:-} == --print-dir ]]; then
  echo "$dir"
  exit 0
fi
if [[ -f $dir/.complete ]]; then
  echo "$dir"
  exit 0
fi

say() { echo "[aikeys setup] $*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing Debian packages: nodejs npm"
  sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
  say "Node.js >= 20 is required for the client tests (found $(node --version))" >&2
  exit 1
fi

say "Node packages of the client tests (npm ci, $(node --version)) into $dir"
mkdir -p "$cache/node"
tmp=$(mktemp -d "$cache/node/.partial-$hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$tmp/"
start=$SECONDS
# --loglevel=http prints one line per download: the progress of a first install (about 700 MB).
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=http) >&2
"$tmp/node_modules/.bin/codex" --version >&2
kilo=$tmp/node_modules/@kilocode/cli-linux-x64/bin/kilo  # the only platform the registry has
[[ -x $kilo ]] && echo "kilo $("$kilo" --version)" >&2
for p in opencode-linux-x64 opencode-linux-arm64 opencode-darwin-arm64 opencode-darwin-x64; do
  if [[ -x $tmp/node_modules/$p/bin/opencode ]]; then
    echo "opencode $("$tmp/node_modules/$p/bin/opencode" --version)" >&2
    break
  fi
done
touch "$tmp/.complete"
if ! mv -T "$tmp" "$dir" 2>/dev/null; then
  # another install finished first (or left a broken folder behind)
  if [[ ! -f $dir/.complete ]]; then
    rm -rf "$dir"
    mv -T "$tmp" "$dir"
  fi
fi
say "Node packages installed in $((SECONDS - start))s"
echo "$dir"
