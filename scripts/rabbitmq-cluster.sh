#!/usr/bin/env bash
# A private three-node RabbitMQ cluster beside the machine's own node (which it never touches).
#
#   scripts/rabbitmq-cluster.sh start BASE_PORT   # nodes c<BASE>n1..n3@localhost, AMQP BASE..BASE+2
#   scripts/rabbitmq-cluster.sh stop BASE_PORT    # stops the three nodes, removes their data
#   scripts/rabbitmq-cluster.sh nodes BASE_PORT   # prints "NODE PORT" for each member
#
# Each member is a scripts/rabbitmq-node.sh node (own name, AMQP port, distribution port
# PORT+20000, data under /tmp/rabbitmq-NAME, the rabbitmq user's Erlang cookie). Nodes 2 and 3
# join node 1 (stop_app, reset, join_cluster, start_app); start returns once node 1 reports
# three running nodes. A start over a cluster left by a killed run wipes it first, so every
# run begins with empty queues. Used by tests/integration/test_quorum.py (make test).
set -eu

usage() { echo "usage: $0 start|stop|nodes BASE_PORT" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1 base=$2
case "$base" in ''|*[!0-9]*) usage ;; esac
here=$(cd "$(dirname "$0")" && pwd)
BIN=/usr/lib/rabbitmq/bin
#: Seconds start waits for the cluster to report all three nodes running.
JOIN_WAIT_S=60

name() { echo "c${base}n$1"; }
port() { echo $((base + $1 - 1)); }
node() { echo "$(name "$1")@localhost"; }
ctl() { local n=$1; shift; "$BIN/rabbitmqctl" -q -n "$(node "$n")" "$@"; }

quiet() {
  # rabbitmqctl prints the joining node's log lines (expected errors while it restarts):
  # show them only when the command fails.
  local out
  if ! out=$(ctl "$@" 2>&1); then echo "$out" >&2; return 1; fi
}

wipe() {
  for i in 1 2 3; do "$here/rabbitmq-node.sh" stop "$(name "$i")" "$(port "$i")" || true; done
  for i in 1 2 3; do rm -rf "/tmp/rabbitmq-$(name "$i")"; done
}

running_nodes() {
  # cluster_status --formatter json: {"running_nodes": [...], ...}
  ctl 1 cluster_status --formatter json 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null || echo 0
}

start() {
  wipe  # a cluster from an earlier run may hold queues, or half a membership
  for i in 1 2 3; do "$here/rabbitmq-node.sh" start "$(name "$i")" "$(port "$i")" & done
  wait
  for i in 2 3; do
    quiet "$i" stop_app
    quiet "$i" reset
    quiet "$i" join_cluster "$(node 1)"
    quiet "$i" start_app
  done
  for _ in $(seq 1 "$JOIN_WAIT_S"); do
    if [ "$(running_nodes)" = 3 ]; then
      echo "cluster up: $(node 1) $(node 2) $(node 3), amqp ports $(port 1)-$(port 3)" >&2
      return 0
    fi
    sleep 1
  done
  echo "cluster did not reach 3 running nodes; see /tmp/rabbitmq-$(name 1)/log" >&2
  return 1
}

nodes() { for i in 1 2 3; do echo "$(node "$i") $(port "$i")"; done; }

case "$action" in
  start) start ;;
  stop) wipe ;;
  nodes) nodes ;;
  *) usage ;;
esac
