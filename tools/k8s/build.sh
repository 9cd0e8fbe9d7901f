#!/usr/bin/env bash
# Build the real control plane used by aikeys' tests and dev stack from Go modules:
#   kube-apiserver, kube-controller-manager, kubectl  (k8s.io/kubernetes, tools/k8s/controlplane)
#   etcd                                               (go.etcd.io/etcd/server/v3, tools/k8s/etcd)
#   helm                                               (helm.sh/helm/v3, go install)
# Binaries land in a versioned cache outside the repository and are built only when missing:
#   ${AIKEYS_CACHE:-~/.cache/aikeys}/bin/{k8s-VERSION,etcd-VERSION,helm-VERSION}/
# Usage: tools/k8s/build.sh [--print-dirs]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${AIKEYS_CACHE:-$HOME/.cache/aikeys}
k8s_dir=$cache/bin/k8s-$K8S_VERSION
etcd_dir=$cache/bin/etcd-$ETCD_VERSION
helm_dir=$cache/bin/helm-$HELM_VERSION

if [[ ${1:-} == --print-dirs ]]; then
  printf '%s\n' "$k8s_dir" "$etcd_dir" "$helm_dir"
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

build_k8s() {
  local missing=()
  for b in kube-apiserver kube-controller-manager kubectl; do
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
build_etcd
build_helm
build_k8s
step "done: $k8s_dir $etcd_dir $helm_dir"
