#!/usr/bin/env bash
# Makes sure a RabbitMQ broker accepts connections on 127.0.0.1:5672.
# A broker that already listens is left exactly as it is (never stopped or
# reconfigured); otherwise the Debian package is installed if missing and a
# node is started in the background.
#   bash scripts/broker.sh                  as above
#   bash scripts/broker.sh --install-only   only install the package if missing
#                                           (for scripts/cluster.sh: no node started)
set -euo pipefail
INSTALL_ONLY=0
if [ "${1:-}" = "--install-only" ]; then INSTALL_ONLY=1; fi

HOST=127.0.0.1
PORT=5672
WAIT="${AMQPFAST_BROKER_WAIT:-120}"  # seconds to wait for the node to boot
# rabbitmq-server and rabbitmqctl live in /usr/sbin, not always on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '==> %s\n' "$*"; }

listening() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

if [ "$INSTALL_ONLY" -eq 0 ] && listening; then
    log "RabbitMQ listens on $HOST:$PORT"
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing rabbitmq-server (Debian package)"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    # The package may start the node itself where there is an init system;
    # the checks below cope with either.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server \
        >/dev/null
fi
if [ "$INSTALL_ONLY" -eq 1 ]; then exit 0; fi

deadline=$((SECONDS + WAIT))

# A node may be up but still booting (its listener opens last): then only wait.
if listening || timeout 15 rabbitmqctl -q ping >/dev/null 2>&1; then
    log "a RabbitMQ node is running, waiting for its listener"
else
    log "starting rabbitmq-server"
    rabbitmq-server -detached
fi

# await_startup blocks until the node has booted, or fails while the node's
# VM is not up yet: retried until the deadline.
until listening; do
    left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "broker.sh: RabbitMQ did not listen on $HOST:$PORT within ${WAIT}s" >&2
        for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log; do
            if [ -s "$f" ]; then tail -n 20 "$f" >&2; fi
        done
        exit 1
    fi
    timeout "$left" rabbitmqctl -q await_startup --timeout "$left" >/dev/null 2>&1 || sleep 2
done
log "RabbitMQ listens on $HOST:$PORT"
