#!/usr/bin/env bash
# One-time set-up on a fresh machine: a .venv with the whole stack and dgspnet in editable mode.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements.txt
.venv/bin/pip install --quiet --no-deps -e .
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "dgspnet is installed in .venv: run 'source .venv/bin/activate'"
