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
#SBATCH --partition=gpu

cd /data/projects/P3/J7 || exit 1
# SLURM sets CUDA_VISIBLE_DEVICES to the allocation's GPUs (GRES); ranks pick theirs by local rank.
<python>/mpiexec -n 4 /opt/cryohpc/bin/cryohpc-worker --job-dir /data/projects/P3/J7
echo $? > /data/projects/P3/J7/exit_code
