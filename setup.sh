#!/usr/bin/env bash
# One-time set-up on a fresh machine: a .venv with the whole stack and dgspnet in editable mode.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements.txt
.venv/bin/pip install --quiet --no-deps -e .
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
# Offline `dvc plots show`: vega, vega-lite and vega-embed (the versions DVC's page loads from a CDN) from the npm
# registry, inlined into .dvc/plots/offline.html, the page template that .dvc/config names (plots.html_template).
command -v npm >/dev/null || { echo "setup.sh: npm is needed to fetch vega for offline dvc plots (e.g. apt-get install npm)" >&2; exit 1; }
vega=$(mktemp -d)
(cd "$vega" && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null &&
 for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}" --strip-components=1 package/build; done)
.venv/bin/python .dvc/plots/make_offline_page.py "$vega" .dvc/plots/offline.html && rm -rf "$vega"
echo "dgspnet is installed in .venv: run 'source .venv/bin/activate'"
