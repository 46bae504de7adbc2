#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 programs the local cluster runs, from Debian's `kubernetes` source
# package, and caches them outside the repository: the control plane (kube-apiserver,
# kube-controller-manager) and the real node (kubelet, kube-proxy, kube-scheduler). No Docker
# engine exists on our machines, so this is how tests get a real cluster.
#
# Idempotent: only the programs missing from the cache are built, in one pass of the source tree.
#   scripts/build-control-plane.sh          build what is missing (about 25 minutes on 2 cores cold)
#   scripts/build-control-plane.sh --plan   print what would be built, one name per line; build nothing
# The system packages it needs (golang-go, dpkg-dev, ...) come from scripts/install-system-deps.sh.
set -euo pipefail

K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE_ROOT="${ZETA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zeta-router}"
OUT="${ZETA_K8S_BIN_DIR:-$CACHE_ROOT/k8s-1.20.2}"
PROGRAMS=(kube-apiserver kube-controller-manager kubelet kube-proxy kube-scheduler)

# What is not yet in $OUT: each program (an executable file of that name counts as built), and
# the source of the pause program every pod sandbox runs (compiled when the node image is made).
missing_programs() {
  local p
  for p in "${PROGRAMS[@]}"; do
    [[ -x "$OUT/$p" && -f "$OUT/$p" ]] || echo "$p"
  done
  [[ -f "$OUT/src/pause.c" ]] || echo "pause.c"
}

mapfile -t MISSING < <(missing_programs)

case "${1:-}" in
  --plan)
    if ((${#MISSING[@]})); then printf '%s\n' "${MISSING[@]}"; fi
    exit 0
    ;;
  "") ;;
  -h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "build-control-plane.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

if ((${#MISSING[@]} == 0)); then
  echo "kubernetes 1.20.2 programs cached in $OUT"
  exit 0
fi
if [[ -n "${ZETA_K8S_BIN_DIR:-}" ]]; then
  echo "build-control-plane.sh: \$ZETA_K8S_BIN_DIR=$OUT lacks: ${MISSING[*]}" >&2
  echo "  put those 1.20.2 binaries there, or unset ZETA_K8S_BIN_DIR to build them into the cache" >&2
  exit 1
fi

for tool in go dpkg-source rsync make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build-control-plane.sh: '$tool' is not installed; run scripts/install-system-deps.sh" >&2
    echo "  (make prepare, make test and make demo run it for you)" >&2
    exit 1
  fi
done
if [[ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]]; then
  echo "build-control-plane.sh: Debian's golang-github-modern-go-reflect2-dev is not installed;" >&2
  echo "  run scripts/install-system-deps.sh" >&2
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

# Source packages need deb-src entries. Derive them from the machine's own apt sources so that
# whatever mirror this machine is configured for is the one used.
enable_deb_src() {
  local generated=/etc/apt/sources.list.d/zeta-router-deb-src.sources
  if [[ -f $generated || -f /etc/apt/sources.list.d/zeta-router-deb-src.list ]]; then return 1; fi
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
  return 0
}

echo ">> building ${MISSING[*]} (kubernetes 1.20.2 from Debian's source package)"
if enable_deb_src; then
  echo ">> enabled source packages; updating apt lists"
  $SUDO apt-get update -q
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zeta-k8s-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo ">> fetching kubernetes source $K8S_DEB_VERSION"
if ! apt-get source -q "kubernetes=$K8S_DEB_VERSION"; then
  # A machine whose lists predate the deb-src entries: refresh once and retry.
  $SUDO apt-get update -q
  apt-get source -q "kubernetes=$K8S_DEB_VERSION"
fi
SRC=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
cd "$SRC"

# The vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first custom-resource write.
# Only the files are swapped: go.mod keeps naming 1.0.1 so the vendor consistency check passes.
if ((${#MISSING[@]} == 1)) && [[ ${MISSING[0]} == pause.c ]]; then
  mkdir -p "$OUT/src" && cp build/pause/linux/pause.c "$OUT/src/pause.c"
  echo "copied pause.c into $OUT/src"
  exit 0
fi
echo ">> replacing vendored reflect2 with Debian's 1.0.2"
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

# Kubernetes 1.20 builds in GOPATH mode through its own Makefile, which first generates the
# files the release tarball does not ship (openapi, deepcopy, conversions). This is how Debian
# builds the package: the source tree is exposed as k8s.io/kubernetes inside a GOPATH.
what=()
for p in "${MISSING[@]}"; do [[ $p == pause.c ]] || what+=("cmd/$p"); done
mkdir -p "$OUT/src"
if ((${#what[@]})); then
  echo ">> make WHAT=\"${what[*]}\" (the control plane alone ~15 min on 2 cores, all five ~25 min)"
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  GOPATH="$PWD/.go" CGO_ENABLED=0 make WHAT="${what[*]}"
  for w in "${what[@]}"; do install -m 0755 "_output/bin/${w#cmd/}" "$OUT/"; done
fi
cp build/pause/linux/pause.c "$OUT/src/pause.c"
echo "built ${MISSING[*]} into $OUT"
