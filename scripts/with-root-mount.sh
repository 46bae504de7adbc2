#!/usr/bin/env bash
# Runs a command with "/" as a mount point, which buildah and runc need.
#
#   scripts/with-root-mount.sh CMD [ARG...]
#
# buildah (unpacking a layer) and runc (starting any container) make "/" a slave mount before
# they change root; where "/" is not a mount point, as in a plain chroot (a Debian made with
# debootstrap and entered with `chroot`), that fails with "invalid argument". There, and only
# there, the command runs in a mount namespace of its own in which the root is bind-mounted onto
# itself; everything it starts (containerd, the kubelet, their mounts) lives in that namespace
# and goes with it. On a machine, a VM or a container, "/" is a mount point and the command runs
# as it is.
set -euo pipefail

if [[ ${1:-} == --inside ]]; then
  # In the new mount namespace: the root bound to a folder of its own (a mount over "/" itself
  # would not be entered: a path lookup never follows a mount on top of the root), kept private
  # (nothing mounted later is seen outside), then the command, in the same folder, rooted there.
  dir=$2
  shift 2
  top=$(mktemp -d /tmp/zeta-root.XXXXXX)
  mount --rbind / "$top"
  mount --make-rprivate "$top"
  exec chroot "$top" /bin/sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
fi

if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -eq 0 ]] && exit 2
  exit 0
fi

root_is_mounted() {
  awk '$5 == "/" { found = 1 } END { exit !found }' /proc/self/mountinfo 2>/dev/null
}

if root_is_mounted || [[ $(id -u) -ne 0 ]]; then
  # Without root nothing here could help (and buildah or the real node will say what they need).
  exec "$@"
fi
echo "with-root-mount: / is not a mount point here (a chroot?); running $1 in a mount namespace where it is" >&2
# --propagation unchanged: unshare's default (making / private) is what fails here.
exec unshare --mount --propagation unchanged -- "$(readlink -f "$0")" --inside "$PWD" "$@"
