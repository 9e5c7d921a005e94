#!/usr/bin/env bash
# The test suite, from a fresh machine: installs RELION (Debian) as the numerical peer and
# OpenSSH (server for the SSH-worker tests, client for ssh-keygen), makes .venv with
# cryohpc and its test dependencies (cryosparc-tools as the .cs peer), checks style, runs
# pytest. SLURM is installed by scripts/dev-slurm.sh when its tests first need it.
set -euo pipefail
if ! command -v relion_reconstruct >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq relion openssh-server openssh-client >/dev/null
fi
EXTRAS=test source "$(dirname "$0")/env.sh"
cd "$ROOT"
ruff check .
exec python -m pytest -q "$@"
