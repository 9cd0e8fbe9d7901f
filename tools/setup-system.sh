#!/usr/bin/env bash
# Install the Debian packages aikeys' tests and dev stack run for real, when missing:
#   redis-server + redis-tools (the ledger), prometheus (promtool, end-to-end scraping), wrk and
#   nginx-light (bench: the load tool and the static upstream);
#   for the real node (tests/e2e, make cluster): containerd, runc, the CNI plugins, iptables, conntrack,
#   mmdebstrap and buildah (images without Docker), gcc + libc6-dev (the static pause binary).
# With --dev, only what the dev stack runs (`make dev`): redis-server and redis-tools.
# Go (>= 1.24, for tools/k8s/build.sh) is checked either way, never installed.
set -euo pipefail
declare -A need=([redis-server]=redis-server [redis-cli]=redis-tools)
case ${1:-} in
  --dev) ;;
  "") need+=([prometheus]=prometheus [promtool]=prometheus [wrk]=wrk [nginx]=nginx-light
             [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
             [iptables]=iptables [conntrack]=conntrack [mmdebstrap]=mmdebstrap [buildah]=buildah
             [gcc]=gcc [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev) ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac
missing=()
for cmd in "${!need[@]}"; do
  if [[ $cmd == /* ]]; then
    [[ -e $cmd ]] || missing+=("${need[$cmd]}")
  else
    PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
  fi
done
if ((${#missing[@]})); then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "[aikeys setup] installing Debian packages: $pkgs"
  sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
  $sudo_ apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  # Debian starts the services it installs; aikeys runs its own instances on free ports (and its
  # node its own containerd, in its own network namespace).
  for svc in redis-server prometheus nginx containerd; do $sudo_ service "$svc" stop >/dev/null 2>&1 || true; done
fi
command -v go >/dev/null || { echo "[aikeys setup] Go >= 1.24 is required (https://go.dev/doc/install)" >&2; exit 1; }
echo "[aikeys setup] system packages ok"
