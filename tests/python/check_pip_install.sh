#!/usr/bin/env bash
# The documented install path: `pip install ./bindings/python` (PEP 517, scikit-build-core builds
# libsync from this checkout) into a fresh virtual environment, then the whole Python suite
# against the installed module instead of the build tree's.
#   tests/python/check_pip_install.sh <python> <work-dir>
set -euo pipefail
python=$1
work=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)

rm -rf "$work"
# System site-packages: the suite's own dependencies (pytest, websockets...) come from there.
"$python" -m venv --system-site-packages "$work/venv"
# No build isolation: scikit-build-core comes from tests/requirements.txt, so the check needs no
# network; a user's plain `pip install ./bindings/python` fetches it from PyPI instead.
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
  "$repo/bindings/python"

cd "$work"
"$work/venv/bin/python" - <<'PY'
import pathlib, syncengine
where = pathlib.Path(syncengine.__file__).resolve()
assert "venv" in where.parts, f"syncengine imported from {where}, not from the venv"
print("installed:", where.parent, syncengine.__version__)
PY
PYTHONDONTWRITEBYTECODE=1 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/python"
