#!/usr/bin/env bash
# Install the Debian packages aikeys' tests and dev stack run for real, when missing:
#   redis-server + redis-tools (the ledger), prometheus (promtool, end-to-end scraping), wrk (bench).
set -euo pipefail
declare -A need=([redis-server]=redis-server [redis-cli]=redis-tools [prometheus]=prometheus
                 [promtool]=prometheus [wrk]=wrk)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if ((${#missing[@]})); then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "[aikeys setup] installing Debian packages: $pkgs"
  sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
  $sudo_ apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  # Debian starts the services it installs; aikeys runs its own instances on free ports.
  for svc in redis-server prometheus; do $sudo_ service "$svc" stop >/dev/null 2>&1 || true; done
fi
command -v go >/dev/null || { echo "[aikeys setup] Go >= 1.24 is required (https://go.dev/doc/install)" >&2; exit 1; }
echo "[aikeys setup] system packages ok"
