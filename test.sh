#!/usr/bin/env bash
# All tests: the notebooks' component tests (nbdev_test), then the integration tests (pytest).
# Offline by design: CLIP weights are never downloaded by a test.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
.venv/bin/nbdev_test --n_workers 2 "$@"
.venv/bin/pytest -q tests
