#!/usr/bin/env bash
# Usage: UV=.tools/bin/uv scripts/bench-python.sh
#
# Prints the interpreter `make bench` runs the benchmark and kubemta's services with (bench/kubemta_stack.py starts
# the console scripts beside it):
# - BENCH_PYTHON=optimized (the default): .venv-bench/bin/python, a virtual environment of the workspace on the
#   CPython that scripts/optimized-python.sh builds once per machine with PGO and LTO, as the official `python`
#   images are built (the image kubemta ships in is one of them);
# - BENCH_PYTHON=venv: .venv/bin/python, the development interpreter (pyenv's build, without PGO and LTO).
set -euo pipefail
uv=${UV:-.tools/bin/uv}
case ${BENCH_PYTHON:-optimized} in
venv)
    echo .venv/bin/python
    ;;
optimized)
    interpreter=$(scripts/optimized-python.sh)
    UV_PROJECT_ENVIRONMENT=.venv-bench UV_COMPILE_BYTECODE=1 "$uv" sync --all-packages --frozen --quiet \
        --python "$interpreter" >&2
    .venv-bench/bin/python -m compileall -q services/*/src bench tests scripts >/dev/null
    echo .venv-bench/bin/python
    ;;
*)
    echo "BENCH_PYTHON must be optimized or venv, not ${BENCH_PYTHON}" >&2
    exit 1
    ;;
esac
