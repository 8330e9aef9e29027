#!/usr/bin/env bash
# All tests: the notebooks' component tests (nbdev_test, the cells marked `#| slow` included), then the integration tests (pytest).
# Offline by design: CLIP weights are never downloaded by a test.
set -euo pipefail
cd "$(dirname "$0")"
# nbdev_test runs two notebooks at once on our 2 cores: one torch thread each, and threads that
# sleep instead of spinning while they wait, avoid oversubscription.
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
.venv/bin/nbdev_test --n_workers 2 --flags slow "$@"
.venv/bin/pytest -q tests
