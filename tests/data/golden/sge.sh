#!/bin/bash
# cryohpc job P3 J7 (homo_reconstruct), rendered for lane sge-lane.
#$ -N cryohpc_inst1_P3_J7
#$ -S /bin/bash
#$ -V
#$ -wd /data/projects/P3/J7
#$ -o /data/projects/P3/J7/job.log
#$ -j y
#$ -pe smp 8
#$ -l h_vmem=3G
#$ -l gpu=4
#$ -q gpu

cd /data/projects/P3/J7 || exit 1
# Grid Engine with a GPU resource exports the granted devices in SGE_HGR_gpu.
if [ -n "${SGE_HGR_gpu:-}" ]; then
    CUDA_VISIBLE_DEVICES="$(echo "$SGE_HGR_gpu" | tr ' ' ',')"
    export CUDA_VISIBLE_DEVICES
fi
<python>/mpiexec -n 4 /opt/cryohpc/bin/cryohpc-worker --job-dir /data/projects/P3/J7
echo $? > /data/projects/P3/J7/exit_code
