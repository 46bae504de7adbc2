#!/usr/bin/env bash
# Installs the Debian packages that `make test`, `make demo`, `make images` and the cluster need.
# This is the one list of system packages: the Makefile (make system-deps, a step of make prepare)
# and .ci/run both call it.
#
#   scripts/install-system-deps.sh            install what is missing (apt-get, through sudo when not root)
#   scripts/install-system-deps.sh --check    print the missing packages, one per line; install nothing
#   scripts/install-system-deps.sh --list     print the whole list
#
# Packages already installed are detected with dpkg-query, so a machine that has them all runs
# no apt command at all. Debian starts services on install; nothing installed here may run outside
# the tests' control, so a policy-rc.d forbids that for the duration of the install.
set -euo pipefail

PACKAGES=(
  # the local control plane: etcd, its keys and certificates
  etcd-server openssl
  # metrics for the control loop and its tests
  prometheus
  # the llama.cpp server from the xllamacpp wheel links OpenMP
  libgomp1
  # building kubernetes 1.20.2 from Debian's source package (scripts/build-control-plane.sh)
  golang-go golang-github-modern-go-reflect2-dev dpkg-dev ca-certificates make rsync
  # the real node: container runtime, CNI, kube-proxy's iptables, network namespaces
  containerd runc containernetworking-plugins iptables conntrack iproute2 procps kmod
  # images without a registry or Docker engine: a Debian base, buildah, the static pause program
  debootstrap buildah gcc libc6-dev
)

missing_packages() {
  local p status
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || echo "$p"
  done
}

case "${1:-}" in
  --list)
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
    ;;
  --check)
    missing_packages
    exit 0
    ;;
  "") ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "install-system-deps.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-system-deps.sh: this is not a Debian-based machine (no dpkg-query)." >&2
  echo "  Install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

mapfile -t NEED < <(missing_packages)
if ((${#NEED[@]} == 0)); then
  echo "system packages: all ${#PACKAGES[@]} installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  elif command -v sudo >/dev/null 2>&1 && [[ -t 0 ]]; then
    SUDO=(sudo)
  else
    echo "install-system-deps.sh: these Debian packages are missing and this user can neither" >&2
    echo "install them (not root) nor use sudo:" >&2
    echo "  ${NEED[*]}" >&2
    echo "Ask an administrator to run:" >&2
    echo "  apt-get install --no-install-recommends ${NEED[*]}" >&2
    exit 1
  fi
fi

echo ">> installing Debian packages: ${NEED[*]}"
made_policy=""
cleanup() { if [[ -n $made_policy ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
"${SUDO[@]}" apt-get update -q
if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${NEED[@]}"; then
  echo "install-system-deps.sh: apt-get could not install: ${NEED[*]}" >&2
  exit 1
fi
mapfile -t STILL < <(missing_packages)
if ((${#STILL[@]})); then
  echo "install-system-deps.sh: still missing after apt-get: ${STILL[*]}" >&2
  exit 1
fi
echo "system packages: installed ${NEED[*]}"
