#!/usr/bin/env bash
# A real single-node SLURM for tests and development: munge, slurmctld and slurmd from
# Debian, run by hand (no systemd), with two fake GPUs declared through GRES. Debian's
# Torque wrappers (qsub/qstat/qdel over SLURM) come along for PBS-lane tests.
#
#   scripts/dev-slurm.sh up DIR     install if needed, write config under DIR, start, wait until idle
#   scripts/dev-slurm.sh down DIR   stop the daemons started from DIR
#   scripts/dev-slurm.sh env DIR    print the environment clients need (eval it)
#
# Environment (for "up"): SLURMCTLD_PORT (default 16817) and SLURMD_PORT (default 16818),
# the TCP ports on 127.0.0.1; set free ones to run beside another SLURM (the tests do).
set -euo pipefail
USAGE="usage: dev-slurm.sh up|down|env DIR   (env: SLURMCTLD_PORT=16817 SLURMD_PORT=16818)"
cmd="${1:?$USAGE}"
DIR="$(mkdir -p "${2:?$USAGE}" && cd "$2" && pwd)"
HOST="$(hostname -s)"
CONF="$DIR/slurm.conf"

install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null \
            || ! dpkg-query -W -f='${Status}' slurm-wlm-torque 2>/dev/null | grep -q "ok installed"; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurmctld slurmd slurm-client munge \
            slurm-wlm-torque >/dev/null
    fi
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge" "$DIR/dev"
    chmod 0711 "$DIR/munge"
    if [ ! -f "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$DIR/munge/munge.key"
    fi
    for i in 0 1; do  # fake GPU device files: SLURM only needs them to exist
        [ -e "$DIR/dev/nvidia$i" ] || mknod "$DIR/dev/nvidia$i" c 195 "$i" 2>/dev/null || touch "$DIR/dev/nvidia$i"
    done
    cat > "$CONF" <<CONF
ClusterName=cryohpc-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=10
KillWait=5
InactiveLimit=0
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=20000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    cat > "$DIR/gres.conf" <<CONF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/dev/nvidia[0-1]
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$(cat "$1")/stat" 2>/dev/null; }

up() {
    install
    write_config
    export SLURM_CONF="$CONF"
    alive "$DIR/munged.pid" || munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed" --force
    alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
    for _ in $(seq 1 60); do
        if timeout 5 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "SLURM up: SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "SLURM did not come up; logs in $DIR/log" >&2
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

stop_pid() {
    local f="$1"
    [ -f "$f" ] || return 0
    local pid
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do alive "$f" || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true  # slurmd may ignore SIGTERM without its controller
    rm -f "$f"
}

down() {
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "unknown command $cmd; $USAGE" >&2; exit 2 ;;
esac
