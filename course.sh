#!/usr/bin/env bash
# Set everything up (a venv in .venv, the pinned dependencies from pyproject.toml,
# the embedded offline model), then:
#   ./course.sh lab     open JupyterLab on lessons/
#   ./course.sh test    run the whole test suite (offline)
#   ./course.sh setup   set up only
# Re-running is cheap: dependencies are reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"

action="${1:-setup}"
case "$action" in lab|test|setup) ;; *) echo "usage: $0 {lab|test|setup} [pytest args...]" >&2; exit 2 ;; esac
shift || true

VENV="${MI_COURSE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "mi-course needs Python >= 3.10; found: $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.x" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.mi-course-installed"
wanted="$(cat pyproject.toml course.sh | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing dependencies (pinned in pyproject.toml)"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, as a CPU build on Linux machines without an NVIDIA GPU: a plain
    # install would pull a multi-GB CUDA build there.
    torch_pin="$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
    torch_index=()
    if [ "$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1 \
        && "$PY" -c 'import urllib.request; urllib.request.urlopen("https://download.pytorch.org/whl/cpu/", timeout=5)' 2>/dev/null; then
        torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "$PY" -m pip install --quiet ${torch_index[@]+"${torch_index[@]}"} "$torch_pin"
    "$PY" -m pip install --quiet -e ".[test]"
    echo "$wanted" > "$stamp"
fi

echo "==> preparing the embedded model"
"$VENV/bin/mi-course" prepare

case "$action" in
    lab)
        echo "==> opening JupyterLab on lessons/"
        # The formgrader (Nbgrader menu) needs its gradebook folder and shells out to the
        # venv's alembic when it creates the gradebook.
        mkdir -p .nbgrader
        case "$VENV" in /*) venv_bin="$VENV/bin" ;; *) venv_bin="$PWD/$VENV/bin" ;; esac
        export PATH="$venv_bin:$PATH"
        root_flag=()
        [ "$(id -u)" = 0 ] && root_flag=(--allow-root)  # containers and CI boxes often run as root
        exec "$VENV/bin/jupyter" lab lessons/ ${root_flag[@]+"${root_flag[@]}"} "$@" ;;
    test)
        export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
        # two workers (pytest-xdist): the lessons' grading tests spread over both, every other
        # module stays on one (tests/conftest.py); `./course.sh test -n 0` runs in one process
        exec "$PY" -m pytest -n 2 --dist loadgroup --no-loadscope-reorder "$@" ;;
    setup)
        echo "==> ready: ./course.sh lab" ;;
esac
