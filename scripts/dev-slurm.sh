#!/usr/bin/env bash
# A real SLURM for tests and development: munge, slurmctld and slurmd from Debian, run by
# hand (no systemd), with fake GPUs declared through GRES. Debian's Torque wrappers
# (qsub/qstat/qdel over SLURM) come along for PBS-lane tests.
#
#   scripts/dev-slurm.sh up DIR [--nodes N]   install if needed, write config under DIR, start, wait until idle
#   scripts/dev-slurm.sh down DIR             stop the daemons started from DIR (and remove its namespaces)
#   scripts/dev-slurm.sh env DIR              print the environment clients need (eval it)
#   scripts/dev-slurm.sh kill-node DIR NODE   multi-node: kill a node's slurmd and every process on it
#   scripts/dev-slurm.sh start-node DIR NODE  multi-node: start a killed node's slurmd again
#
# Without --nodes: one node (this host) on 127.0.0.1 with two fake GPUs.
# With --nodes N: nodes node1..nodeN, each a network namespace (own address on a bridge
# this script makes, own hostname, own /etc/hosts) with its own slurmd, 4 CPUs and 4 fake
# GPUs; slurmctld and munged stay on this host, the filesystem is shared as a cluster's
# would be, and DIR/local-ssd is each node's own scratch (a per-node folder bind-mounted
# there inside the node's mount namespace), as a node-local SSD is. Partitions: "batch"
# (default, preemptible: PreemptMode=REQUEUE) and "urgent" (higher PriorityTier, preempts).
#
# Multi-node clusters keep accounting: slurmdbd over a MariaDB server of their own (data
# under DIR/mysql, on 127.0.0.1), so sacct answers with elapsed time, TRES and MaxRSS.
#
# Environment (for "up"): SLURMCTLD_PORT (default 16817) and SLURMD_PORT (default 16818),
# and for --nodes SLURMDBD_PORT (16819) and MYSQL_PORT (16820); set free ones to run
# beside another SLURM (the tests do).
set -euo pipefail
USAGE="usage: dev-slurm.sh up DIR [--nodes N] | down|env DIR | kill-node|start-node DIR NODE"
cmd="${1:?$USAGE}"
DIR="$(mkdir -p "${2:?$USAGE}" && cd "$2" && pwd)"
HOST="$(hostname -s)"
CONF="$DIR/slurm.conf"
NODES=0  # 0: single-node mode
[ -f "$DIR/nodes" ] && NODES="$(cat "$DIR/nodes")"
if [ "$cmd" = up ] && [ "${3:-}" = "--nodes" ]; then
    NODES="${4:?$USAGE}"
    [[ "$NODES" =~ ^[1-9][0-9]?$ ]] || { echo "--nodes takes 1 to 99, not $NODES" >&2; exit 2; }
fi
# names and subnet derived from DIR, so two clusters of different folders never meet
HASH="$(printf %s "$DIR" | md5sum | cut -c1-6)"
PFX="ch$HASH"
H=$((16#$HASH))
NET="10.$((100 + H % 100)).$(((H / 100) % 250))"
CTL_IP="$NET.1"
node_ip() { echo "$NET.$((10 + $1))"; }

install_accounting() {
    if ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurmdbd mariadb-server >/dev/null
    fi
}

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

write_common() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge" "$DIR/dev"
    chmod 0711 "$DIR/munge"
    if [ ! -f "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$DIR/munge/munge.key"
    fi
}

fake_gpus() {  # device files SLURM only needs to exist: fake_gpus FOLDER COUNT
    local i
    mkdir -p "$1"
    for i in $(seq 0 $(($2 - 1))); do
        [ -e "$1/nvidia$i" ] || mknod "$1/nvidia$i" c 195 "$i" 2>/dev/null || touch "$1/nvidia$i"
    done
}

common_conf() {  # slurm.conf lines both kinds of cluster share
    cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
KillWait=5
InactiveLimit=0
GresTypes=gpu
CONF
}

write_config() {
    write_common
    fake_gpus "$DIR/dev" 2
    { common_conf; cat <<CONF; } > "$CONF"
ClusterName=cryohpc-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmdSpoolDir=$DIR/spool
SlurmdPidFile=$DIR/slurmd.pid
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
MessageTimeout=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=20000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    cat > "$DIR/gres.conf" <<CONF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/dev/nvidia[0-1]
CONF
}

write_multi_config() {
    local i
    write_common
    local nodes_conf="" gres=""
    for i in $(seq 1 "$NODES"); do
        fake_gpus "$DIR/dev/node$i" 4
        mkdir -p "$DIR/scratch/node$i" "$DIR/spool/node$i"
        nodes_conf+="NodeName=node$i NodeAddr=$(node_ip "$i") CPUs=4 RealMemory=8000 Gres=gpu:4 State=UNKNOWN"$'\n'
        gres+="NodeName=node$i Name=gpu File=$DIR/dev/node$i/nvidia[0-3]"$'\n'
    done
    mkdir -p "$DIR/local-ssd"
    { common_conf; cat <<CONF; } > "$CONF"
ClusterName=cryohpc-multi
SlurmctldHost=$HOST($CTL_IP)
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmdLogFile=$DIR/log/slurmd.%n.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTL_IP
AccountingStoragePort=${SLURMDBD_PORT:-16819}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
MinJobAge=600
SlurmdTimeout=8
MessageTimeout=5
JobRequeue=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$nodes_conf
PartitionName=batch Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=node[1-$NODES] MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF
    printf 'AutoDetect=off\n%s' "$gres" > "$DIR/gres.conf"
    cat > "$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=$HOST
DbdAddr=$CTL_IP
DbdPort=${SLURMDBD_PORT:-16819}
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${MYSQL_PORT:-16820}
StorageUser=root
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$DIR/slurmdbd.conf"
    echo "$NODES" > "$DIR/nodes"
}

network_up() {
    local i j
    ip link show "${PFX}br" >/dev/null 2>&1 || {
        ip link add "${PFX}br" type bridge
        ip addr add "$CTL_IP/24" dev "${PFX}br"
        ip link set "${PFX}br" up
    }
    for i in $(seq 1 "$NODES"); do
        local ns="${PFX}n$i"
        {
            echo "127.0.0.1 localhost"
            echo "$CTL_IP $HOST"
            for j in $(seq 1 "$NODES"); do echo "$(node_ip "$j") node$j"; done
        } > "$DIR/hosts"
        ip netns list | grep -qw "$ns" && continue
        ip netns add "$ns"
        ip link add "${PFX}v$i" type veth peer name "${PFX}p$i"
        ip link set "${PFX}v$i" master "${PFX}br" up
        ip link set "${PFX}p$i" netns "$ns"
        ip -n "$ns" link set "${PFX}p$i" name eth0
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$CTL_IP"
    done
}

start_node() {  # slurmd in the node's own namespaces: network, hostname, mounts (/etc/hosts, its scratch)
    local i="${1#node}"
    ip link set "${PFX}v$i" up
    alive "$DIR/slurmd.node$i.pid" && return 0
    nsenter --net="/run/netns/${PFX}n$i" unshare --uts --mount --propagation slave sh -c '
        hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" "$4" && exec slurmd -f "$5" -N "$1"' \
        sh "node$i" "$DIR/hosts" "$DIR/scratch/node$i" "$DIR/local-ssd" "$CONF"
}

kill_node() {  # a node that dies: its link goes first (no goodbye reaches anyone), then every process on it
    local i="${1#node}"
    ip link set "${PFX}v$i" down 2>/dev/null || true
    ip netns pids "${PFX}n$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    rm -f "$DIR/slurmd.node$i.pid"
}

# Connections to slurmdbd authenticate through munge's default socket (they ignore AuthInfo):
# slurmdbd, slurmctld and the accounting clients run in a mount namespace where this
# cluster's munge folder is /run/munge; DIR/bin/sacct and DIR/bin/sacctmgr do that for clients.
with_munge() {
    mkdir -p /run/munge
    unshare -m --propagation private sh -c 'mount --bind "$0" /run/munge && exec "$@"' "$DIR/munge" "$@"
}

write_client_wrappers() {
    mkdir -p "$DIR/bin"
    ln -sf munge.socket "$DIR/munge/munge.socket.2"
    for tool in sacct sacctmgr; do
        cat > "$DIR/bin/$tool" <<WRAP
#!/bin/sh
mkdir -p /run/munge
exec unshare -m --propagation private sh -c 'mount --bind "\$0" /run/munge && exec "\$@"' "$DIR/munge" $(command -v $tool) "\$@"
WRAP
        chmod 755 "$DIR/bin/$tool"
    done
}

accounting_up() {  # MariaDB on 127.0.0.1 with its data under DIR, then slurmdbd, then the cluster's record
    if [ ! -d "$DIR/mysql/data/mysql" ]; then
        mkdir -p "$DIR/mysql/data"
        mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
            --auth-root-authentication-method=normal --skip-test-db >"$DIR/log/mysql-install.log" 2>&1
    fi
    if ! alive "$DIR/mysql/mysqld.pid"; then
        mariadbd --no-defaults --datadir="$DIR/mysql/data" --user=root --bind-address=127.0.0.1 \
            --port="${MYSQL_PORT:-16820}" --socket="$DIR/mysql/mysqld.sock" --pid-file="$DIR/mysql/mysqld.pid" \
            --log-error="$DIR/log/mysqld.log" --skip-name-resolve --innodb-buffer-pool-size=32M &
        for _ in $(seq 1 60); do [ -S "$DIR/mysql/mysqld.sock" ] && break; sleep 0.5; done
    fi
    write_client_wrappers
    alive "$DIR/slurmdbd.pid" || with_munge slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    for _ in $(seq 1 60); do
        "$DIR/bin/sacctmgr" -i show cluster >/dev/null 2>&1 && break
        sleep 0.5
    done
    "$DIR/bin/sacctmgr" -n show cluster format=cluster 2>/dev/null | grep -qw cryohpc-multi \
        || "$DIR/bin/sacctmgr" -i add cluster cryohpc-multi >/dev/null
}

multi_up() {
    local i
    install
    install_accounting
    write_multi_config
    export SLURM_CONF="$CONF"
    network_up
    alive "$DIR/munged.pid" || munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed" --force
    accounting_up
    alive "$DIR/slurmctld.pid" || with_munge slurmctld -f "$CONF"
    for i in $(seq 1 "$NODES"); do start_node "node$i"; done
    wait_idle "$NODES"
}

wait_idle() {  # wait_idle COUNT: until COUNT nodes are up
    for _ in $(seq 1 90); do
        if [ "$(timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | grep -cE ' (idle|mix|alloc)$')" -ge "$1" ]; then
            echo "SLURM up: SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "SLURM did not come up; logs in $DIR/log" >&2
    tail -n 20 "$DIR"/log/slurm*.log >&2 || true
    return 1
}

multi_down() {
    local i
    for i in $(seq 1 "$NODES"); do
        stop_pid "$DIR/slurmd.node$i.pid"
        kill_node "node$i"
        ip netns del "${PFX}n$i" 2>/dev/null || true
        ip link del "${PFX}v$i" 2>/dev/null || true
    done
    ip link del "${PFX}br" 2>/dev/null || true
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/slurmdbd.pid"
    stop_pid "$DIR/mysql/mysqld.pid"
    stop_pid "$DIR/munged.pid"
    rm -f "$DIR/nodes"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$(cat "$1" 2>/dev/null)/stat" 2>/dev/null; }

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

need_multi() { [ "$NODES" -gt 0 ] || { echo "$DIR is not a multi-node cluster (up --nodes N)" >&2; exit 2; }; }

case "$cmd" in
    up) if [ "$NODES" -gt 0 ]; then multi_up; else up; fi ;;
    down) if [ "$NODES" -gt 0 ]; then multi_down; else down; fi ;;
    env) echo "export SLURM_CONF=$CONF"; [ "$NODES" -gt 0 ] && echo "export PATH=$DIR/bin:\$PATH" ;;
    kill-node) need_multi; kill_node "${3:?$USAGE}" ;;
    start-node) need_multi; start_node "${3:?$USAGE}"; wait_idle "$NODES" ;;
    *) echo "unknown command $cmd; $USAGE" >&2; exit 2 ;;
esac
