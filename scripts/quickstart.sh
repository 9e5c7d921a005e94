#!/usr/bin/env bash
# The main job on the embedded default: an instance under ./quickstart-home, the local
# lane, SQLite, simulated data. Simulates particles from the built-in phantom,
# reconstructs them with 2 MPI ranks, validates against the true volume, and prints the
# resolution and where the map and FSC plot are.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
export CRYOHPC_HOME="${CRYOHPC_HOME:-$ROOT/quickstart-home}"
rm -rf "$CRYOHPC_HOME"
trap 'cryohpc master stop >/dev/null 2>&1 || true' EXIT

cryohpc init --poll-interval-s 0.2
cryohpc project create --title "Quickstart"
cryohpc job create P1 simulate_particles -p n_particles=10000 -p box=64 -p psize_A=1.5 -p snr=0.1
cryohpc job create P1 homo_reconstruct -p compute_num_ranks=2
cryohpc job connect P1 J2 particles J1.particles
cryohpc job create P1 validate_fsc
cryohpc job connect P1 J3 volume J2.volume
cryohpc job connect P1 J3 reference J1.true_volume
for job in J1 J2 J3; do cryohpc job queue P1 "$job" --lane local; done
cryohpc master start
cryohpc job wait P1 J3 --timeout-s 600
cryohpc job log P1 J2 | grep -v progress
echo
cryohpc job show P1 J2
cryohpc job show P1 J3 | grep -E "fsc|compared"
PROJECT_DIR="$CRYOHPC_HOME/projects/P1"
echo
echo "map:      $PROJECT_DIR/J2/J2_map.mrc"
echo "FSC plot: $PROJECT_DIR/J2/J2_fsc.svg"
