#!/bin/bash
# cryohpc job P3 J7 (homo_reconstruct), rendered for lane slurm-lane.
# Every "{{ value }}" below is shell-quoted by cryohpc; run_cmd is pre-quoted.
#SBATCH --job-name=cryohpc_inst1_P3_J7
#SBATCH --comment="cryohpc inst1 P3 J7"
#SBATCH --output=/data/projects/P3/J7/job.log
#SBATCH --open-mode=append
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=2
#SBATCH --mem=30000M
#SBATCH --gres=gpu:4
#SBATCH --no-requeue
#SBATCH --signal=B:USR2@120
#SBATCH --partition=gpu

cd /data/projects/P3/J7 || exit 1
# SLURM sets CUDA_VISIBLE_DEVICES to the allocation's GPUs (GRES); ranks pick theirs by local rank.
# Before the time limit SLURM sends USR2 to this shell (--signal above): the file asks the
# worker to checkpoint and stop, and cryohpc queues the job again (it resubmits, SLURM does not).
# (a function, not a quoted trap string: the quoted path must not sit inside other quotes)
stop_requested() { touch /data/projects/P3/J7/stop_request; }
trap stop_requested USR2
<python>/mpiexec -n 4 /opt/cryohpc/bin/cryohpc-worker --job-dir /data/projects/P3/J7 &
child=$!
wait "$child"; rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
echo "$rc" > /data/projects/P3/J7/exit_code
