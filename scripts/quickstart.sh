#!/usr/bin/env bash
# The main job on the embedded default: an instance under ./quickstart-home, the local
# lane, SQLite, simulated data. Imports a particle stack with its STAR file through the
# master and shows the resulting dataset.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
export CRYOHPC_HOME="${CRYOHPC_HOME:-$ROOT/quickstart-home}"
rm -rf "$CRYOHPC_HOME"
trap 'cryohpc master stop >/dev/null 2>&1 || true' EXIT

cryohpc init --poll-interval-s 0.2
python -m cryohpc.sampledata "$CRYOHPC_HOME/data" --n 500 --box 64
cryohpc project create --title "Quickstart"
cryohpc job create P1 import_particles -p particle_meta_path="$CRYOHPC_HOME/data/particles.star"
cryohpc job queue P1 J1 --lane local
cryohpc master start
cryohpc job wait P1 J1 --timeout-s 300
cryohpc job log P1 J1
cryohpc dataset show "$CRYOHPC_HOME/projects/P1/J1/J1_imported_particles.cs" --rows 2
