# Sourced by scripts/run and scripts/test: make .venv (if missing) and install the project into it.
# EXTRAS picks the optional dependency groups ("server", "server,test,bench", ...).
# Strict editable mode: a link tree under build/ that type checkers follow.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-${EXTRAS:-base}"
# The link tree lists the package's files: install again when one is added or removed.
files="$(cd "$ROOT" && find shared gateway workers -type f ! -name '*.pyc' | sort | md5sum)"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$(cat "$stamp")" != "$files" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT${EXTRAS:+[$EXTRAS]}" \
        --config-settings editable_mode=strict
    echo "$files" > "$stamp"
fi
