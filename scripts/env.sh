# Sourced by scripts/start and scripts/test: a project virtualenv in .venv with the package installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KETAMINE_CDS_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
export PATH="$VENV/bin:$PATH"
install_project() {  # $1: extras, e.g. "[test]"
  python -m pip install --disable-pip-version-check -q -e "$ROOT$1"
}
