#!/usr/bin/env bash
# A private RabbitMQ node beside the machine's own, for tests that stop or reconfigure a broker.
#
#   scripts/rabbitmq-node.sh start NAME PORT   # node NAME@localhost, AMQP on 127.0.0.1:PORT
#   scripts/rabbitmq-node.sh stop NAME PORT
#
# The node is the installed rabbitmq-server run as the rabbitmq user with its own node name,
# AMQP port, distribution port (PORT+20000), config, data and log directories under
# /tmp/rabbitmq-NAME (owned by rabbitmq) and no plugins (no management listener to clash with
# the main node's). It shares the rabbitmq user's Erlang cookie; root's rabbitmqctl reads
# ~/.erlang.cookie, so that is copied once if absent. Then point the suite at it:
#   IMPORTD_TEST_AMQP_PORT=PORT IMPORTD_TEST_RABBITMQ_NODE=NAME@localhost pytest ...
# Nothing here is specific to one node: several names and ports make a cluster's members.
set -eu

usage() { echo "usage: $0 start|stop NAME PORT" >&2; exit 2; }
[ $# -eq 3 ] || usage
action=$1 name=$2 port=$3
case "$port" in ''|*[!0-9]*) usage ;; esac
node="$name@localhost"
dir="/tmp/rabbitmq-$name"
COOKIE=/var/lib/rabbitmq/.erlang.cookie
BIN=/usr/lib/rabbitmq/bin

ctl() { "$BIN/rabbitmqctl" -n "$node" "$@"; }

ensure_cookie() {
  # rabbitmqctl as root authenticates with root's cookie: the same as the nodes'.
  if [ "$(id -u)" -eq 0 ] && [ ! -f "$HOME/.erlang.cookie" ]; then
    install -m 400 "$COOKIE" "$HOME/.erlang.cookie"
  fi
}

as_rabbitmq() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u rabbitmq -- "$@"; else "$@"; fi
}

start() {
  ensure_cookie
  if ctl -q status >/dev/null 2>&1; then echo "$node already running" >&2; return 0; fi
  mkdir -p "$dir/mnesia" "$dir/log"
  printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$port" >"$dir/rabbitmq.conf"
  printf '[].\n' >"$dir/enabled_plugins"
  [ "$(id -u)" -ne 0 ] || chown -R rabbitmq:rabbitmq "$dir"
  as_rabbitmq env HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME="$node" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="$((port + 20000))" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_ENABLED_PLUGINS="" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/$name.pid" \
    "$BIN/rabbitmq-server" -detached >"$dir/log/startup.out" 2>&1
  # await_startup needs the node to be reachable first: retry until it is (or give up).
  for _ in $(seq 1 60); do
    if ctl -q await_startup --timeout 60 >/dev/null 2>&1; then
      echo "$node up: amqp 127.0.0.1:$port, dist $((port + 20000)), dir $dir" >&2
      return 0
    fi
    sleep 1
  done
  echo "$node did not start; see $dir/log" >&2
  return 1
}

stop() {
  ensure_cookie
  if ! ctl -q status >/dev/null 2>&1; then echo "$node not running" >&2; return 0; fi
  ctl -q stop "$dir/$name.pid"  # waits for the Erlang VM (the pid file's process) to exit
  echo "$node stopped" >&2
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
