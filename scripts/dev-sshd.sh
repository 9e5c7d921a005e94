#!/usr/bin/env bash
# A real OpenSSH server on 127.0.0.1 for tests and development, run by hand (no systemd),
# with its own host key, a client key allowed to log in as the current user, and a
# known_hosts file that trusts the host key, so host-key checking stays on.
#
#   scripts/dev-sshd.sh up DIR PORT   install if needed, write keys and config under DIR, start
#   scripts/dev-sshd.sh down DIR      stop the server and every connection it serves
#
# Files under DIR: client_key (identity file), known_hosts, sshd.pid, sshd.log.
# With SSHD_HIDE=/some/dir the server runs in its own mount namespace where an empty
# tmpfs covers that folder: a "worker" that does not share it (for tests).
set -euo pipefail
cmd="${1:?usage: dev-sshd.sh up DIR PORT | down DIR}"
DIR="$(mkdir -p "${2:?usage: dev-sshd.sh up DIR PORT | down DIR}" && cd "$2" && pwd)"
SSHD=/usr/sbin/sshd

install() {
    if [ ! -x "$SSHD" ] || ! command -v ssh-keygen >/dev/null; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server openssh-client >/dev/null
    fi
    [ -d /run/sshd ] || { [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd; } || sudo mkdir -p /run/sshd
}

# The listener and, recursively, the per-connection processes it forked (they start their
# own sessions, so a process-group kill would miss them).
descendants() {
    local pid="$1" child
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

stop() {
    [ -f "$DIR/sshd.pid" ] || return 0
    local pid
    pid="$(cat "$DIR/sshd.pid")"
    if [ -d "/proc/$pid" ]; then
        # shellcheck disable=SC2046
        kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/sshd.pid"
}

case "$cmd" in
up)
    PORT="${3:?usage: dev-sshd.sh up DIR PORT}"
    install
    stop
    [ -f "$DIR/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$DIR/host_key"
    [ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$DIR/client_key"
    cp "$DIR/client_key.pub" "$DIR/authorized_keys"
    chmod 600 "$DIR/authorized_keys"
    echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/host_key.pub")" > "$DIR/known_hosts"
    cat > "$DIR/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $PORT
HostKey $DIR/host_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
MaxSessions 64
MaxStartups 64
Subsystem sftp internal-sftp
CONF
    $SSHD -t -f "$DIR/sshd_config"
    if [ -n "${SSHD_HIDE:-}" ]; then
        unshare --mount --propagation private sh -c \
            'mount -t tmpfs cryohpc-hidden "$1" && exec "$2" -f "$3" -E "$4"' \
            sh "$SSHD_HIDE" "$SSHD" "$DIR/sshd_config" "$DIR/sshd.log"
    else
        $SSHD -f "$DIR/sshd_config" -E "$DIR/sshd.log"
    fi
    for _ in $(seq 100); do
        [ -s "$DIR/sshd.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && exit 0
        sleep 0.05
    done
    echo "sshd did not start; see $DIR/sshd.log" >&2
    cat "$DIR/sshd.log" >&2 || true
    exit 1
    ;;
down)
    stop
    ;;
*)
    echo "usage: dev-sshd.sh up DIR PORT | down DIR" >&2
    exit 2
    ;;
esac
