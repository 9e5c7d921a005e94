#!/usr/bin/env bash
# The test suite, from a fresh machine: installs RELION (Debian) as the numerical peer,
# makes .venv with cryohpc and its test dependencies (cryosparc-tools as the .cs peer),
# checks style, runs pytest.
set -euo pipefail
if ! command -v relion_reconstruct >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq relion >/dev/null
fi
EXTRAS=test source "$(dirname "$0")/env.sh"
cd "$ROOT"
ruff check .
exec python -m pytest -q "$@"
