#!/bin/bash
# cryohpc job P3 J7 (homo_reconstruct), rendered for lane pbs-lane.
#PBS -N cryohpc_inst1_P3_J7
#PBS -V
#PBS -l nodes=1:ppn=8:gpus=4
#PBS -l mem=30gb
#PBS -q gpu
#PBS -o /data/projects/P3/J7/job.log
#PBS -j oe

cd /data/projects/P3/J7 || exit 1
# Torque lists the allocated GPUs in $PBS_GPUFILE, one "host-gpuN" line each.
if [ -n "${PBS_GPUFILE:-}" ] && [ -f "$PBS_GPUFILE" ]; then
    CUDA_VISIBLE_DEVICES="$(sed 's/.*-gpu//' "$PBS_GPUFILE" | paste -sd, -)"
    export CUDA_VISIBLE_DEVICES
fi
<python>/mpiexec -n 4 /opt/cryohpc/bin/cryohpc-worker --job-dir /data/projects/P3/J7
echo $? > /data/projects/P3/J7/exit_code
