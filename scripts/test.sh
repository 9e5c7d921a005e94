#!/usr/bin/env bash
# The test suite, from a fresh machine: makes .venv, installs cryohpc with its test
# dependencies (cryosparc-tools as a peer), checks style, runs pytest.
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/env.sh"
cd "$ROOT"
ruff check .
exec python -m pytest -q "$@"
