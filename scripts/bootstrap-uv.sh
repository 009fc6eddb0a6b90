#!/usr/bin/env bash
# Installs uv into a private virtual environment (no system-wide changes).
set -euo pipefail
dest=${1:-.tools}
python=$(command -v python3.12 || command -v python3)
"$python" -m venv "$dest"
"$dest/bin/pip" install --quiet --disable-pip-version-check uv
