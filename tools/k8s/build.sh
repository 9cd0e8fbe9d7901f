#!/usr/bin/env bash
# Build the real control plane used by aikeys' tests and dev stack from Go modules:
#   kube-apiserver, kube-controller-manager, kubectl  (k8s.io/kubernetes, tools/k8s/controlplane)
#   etcd                                               (go.etcd.io/etcd/server/v3, tools/k8s/etcd)
#   helm                                               (helm.sh/helm/v3, go install)
# With --node, also what a real node runs (aikeys_dev.devstack.node, `make cluster`, tests/e2e):
#   kubelet, kube-scheduler, kube-proxy                (the same k8s.io/kubernetes module)
#   coredns                                            (github.com/coredns/coredns, tools/k8s/coredns)
#   traefik                                            (github.com/traefik/traefik/v3, tools/k8s/traefik)
#   pause                                              (tools/k8s/pause/pause.c, gcc -static)
# Binaries land in a versioned cache outside the repository and are built only when missing:
#   ${AIKEYS_CACHE:-~/.cache/aikeys}/bin/{k8s-VERSION,etcd-VERSION,helm-VERSION,...}/
# Usage: tools/k8s/build.sh [--node] [--print-dirs]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${AIKEYS_CACHE:-$HOME/.cache/aikeys}
k8s_dir=$cache/bin/k8s-$K8S_VERSION
etcd_dir=$cache/bin/etcd-$ETCD_VERSION
helm_dir=$cache/bin/helm-$HELM_VERSION
coredns_dir=$cache/bin/coredns-$COREDNS_VERSION
traefik_dir=$cache/bin/traefik-$TRAEFIK_VERSION
pause_dir=$cache/bin/pause-$PAUSE_VERSION

node=false print=false
for arg in "$@"; do
  case $arg in
    --node) node=true ;;
    --print-dirs) print=true ;;
    *) echo "usage: $0 [--node] [--print-dirs]" >&2; exit 2 ;;
  esac
done
if $print; then
  printf '%s\n' "$k8s_dir" "$etcd_dir" "$helm_dir"
  if $node; then printf '%s\n' "$coredns_dir" "$traefik_dir" "$pause_dir"; fi
  exit 0
fi

# One build at a time: two `make setup`s at once (two shells, a helper and CI) would write the
# same temporary files. The second waits for the first and then finds the binaries cached.
mkdir -p "$cache/bin"
exec 9>"$cache/bin/.build.lock"
if ! flock -n 9; then
  echo "[aikeys build] another build is running; waiting for it ..."
  flock 9
fi

export CGO_ENABLED=0
# Module checksums are verified against the Go checksum database (GOSUMDB's default), which is
# reachable here through the module proxy. Nothing in this script turns verification off.
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
# The controller-manager and apiserver links are memory-hungry; two jobs fit a 2-core machine.
export GOMAXPROCS=${GOMAXPROCS:-$(nproc)}

start=$SECONDS
step() { printf '[aikeys build %4ss] %s\n' "$((SECONDS - start))" "$*"; }

k8s_major=${K8S_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_minor=${K8S_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
build_date=2025-01-01T00:00:00Z  # fixed: reproducible binaries, the version is what matters
version_ldflags() {
  local pkg flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  printf '%s' "$flags"
}

build_k8s() {  # build_k8s BINARY...: the commands of k8s.io/kubernetes that are missing
  local missing=()
  for b in "$@"; do
    [[ -x $k8s_dir/$b ]] || missing+=("$b")
  done
  if ((${#missing[@]} == 0)); then step "k8s $K8S_VERSION: cached in $k8s_dir"; return; fi
  step "k8s $K8S_VERSION: go mod download (first time: ~1 GB of modules)"
  (cd "$here/controlplane" && go mod download)
  mkdir -p "$k8s_dir"
  local b t0
  for b in "${missing[@]}"; do
    t0=$SECONDS
    step "k8s $K8S_VERSION: building $b (cold: several minutes on 2 cores) ..."
    (cd "$here/controlplane" && go build -ldflags "$(version_ldflags)" -o "$k8s_dir/.$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$k8s_dir/.$b.tmp" "$k8s_dir/$b"
    step "k8s $K8S_VERSION: built $b in $((SECONDS - t0))s ($(du -h "$k8s_dir/$b" | cut -f1))"
  done
}

build_etcd() {
  if [[ -x $etcd_dir/etcd ]]; then step "etcd $ETCD_VERSION: cached in $etcd_dir"; return; fi
  step "etcd $ETCD_VERSION: go mod download"
  (cd "$here/etcd" && go mod download)
  mkdir -p "$etcd_dir"
  local t0=$SECONDS
  step "etcd $ETCD_VERSION: building etcd ..."
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$etcd_dir/.etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd_dir/.etcd.tmp" "$etcd_dir/etcd"
  step "etcd $ETCD_VERSION: built in $((SECONDS - t0))s ($(du -h "$etcd_dir/etcd" | cut -f1))"
}

build_helm() {
  if [[ -x $helm_dir/helm ]]; then step "helm $HELM_VERSION: cached in $helm_dir"; return; fi
  mkdir -p "$helm_dir"
  local t0=$SECONDS flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  step "helm $HELM_VERSION: go install (downloads and builds) ..."
  (cd "$helm_dir" && GOBIN="$helm_dir/.gobin" go install -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv "$helm_dir/.gobin/helm" "$helm_dir/helm" && rmdir "$helm_dir/.gobin"
  step "helm $HELM_VERSION: built in $((SECONDS - t0))s ($(du -h "$helm_dir/helm" | cut -f1))"
}

command -v go >/dev/null || { echo "aikeys build: 'go' not found; install Go >= 1.24" >&2; exit 1; }
step "go: $(go version | cut -d' ' -f3-), cache: $cache"
# go_build DIR NAME MODULE_DIR PACKAGE LDFLAGS: one binary of a wrapper module, unless cached.
go_build() {
  local dir=$1 name=$2 module=$3 pkg=$4 ldflags=$5 t0=$SECONDS
  if [[ -x $dir/$name ]]; then step "$name: cached in $dir"; return; fi
  mkdir -p "$dir"
  step "$name: downloading modules and building $pkg (cold: minutes on 2 cores) ..."
  (cd "$module" && go build -ldflags "$ldflags" -o "$dir/.$name.tmp" "$pkg")
  mv "$dir/.$name.tmp" "$dir/$name"
  step "$name: built in $((SECONDS - t0))s ($(du -h "$dir/$name" | cut -f1))"
}

build_pause() {
  if [[ -x $pause_dir/pause ]]; then step "pause: cached in $pause_dir"; return; fi
  command -v gcc >/dev/null || { echo "aikeys build: 'gcc' not found (apt-get install gcc libc6-dev)" >&2; exit 1; }
  mkdir -p "$pause_dir"
  gcc -static -Os -s -Wall -Wextra -o "$pause_dir/.pause.tmp" "$here/pause/pause.c"
  mv "$pause_dir/.pause.tmp" "$pause_dir/pause"
  step "pause: built ($(du -h "$pause_dir/pause" | cut -f1))"
}

build_etcd
build_helm
build_k8s kube-apiserver kube-controller-manager kubectl
if $node; then
  build_k8s kubelet kube-scheduler kube-proxy
  build_pause
  go_build "$coredns_dir" coredns "$here/coredns" aikeys.dev/tools/k8s/coredns \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
  go_build "$traefik_dir" traefik "$here/traefik" github.com/traefik/traefik/v3/cmd/traefik \
    "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
  step "done: $k8s_dir $etcd_dir $helm_dir $coredns_dir $traefik_dir $pause_dir"
else
  step "done: $k8s_dir $etcd_dir $helm_dir"
fi
