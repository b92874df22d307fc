#!/usr/bin/env bash
# `make test`: the tests that share nothing with other runs in 3 processes, and at the same time
# the `serial` ones (they stop the broker, change its settings or inject faults, and print the
# fault summary) in one process against a RabbitMQ node of their own, so that what they do to
# their broker reaches no other test. Both phases must pass.
#
# Where no private node can run (no local rabbitmq-server: containers, the compose stack), or
# with IMPORTD_TEST_SERIAL_AFTER=1, the serial phase runs after the other one against the
# shared broker instead, as before.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
#: The serial phase's own node: name and AMQP port (its distribution port is PORT+20000).
NODE_NAME=${IMPORTD_TEST_SERIAL_NODE:-importd-serial}
NODE_PORT=${IMPORTD_TEST_SERIAL_PORT:-5679}
LOG=${IMPORTD_TEST_SERIAL_LOG:-artifacts/serial-phase.log}

REPORTS=artifacts/fault-report
parallel() { IMPORTD_TEST_REPORT_FILE=$REPORTS-parallel.json "$PY" -m pytest -q -n 3 --dist loadfile -m "not serial" --durations=15; }
serial() { IMPORTD_TEST_REPORT_FILE=$REPORTS-serial.json "$PY" -m pytest -q -m serial --durations=10; }
# One fault summary over both phases (each also prints its own).
summary() {
  echo
  echo "=============== importd fault summary, both phases ==============="
  "$PY" -m tests.support.report "$REPORTS-parallel.json" "$REPORTS-serial.json"
}

mkdir -p artifacts "$(dirname "$LOG")"
rm -f "$REPORTS-parallel.json" "$REPORTS-serial.json"

if [ "${IMPORTD_TEST_SERIAL_AFTER:-0}" = 1 ] || [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
    || [ -n "${IMPORTD_TEST_AMQP_PORT:-}" ] || [ "${IMPORTD_TEST_CONTAINERS:-0}" = 1 ]; then
  parallel; p=$?
  serial; s=$?
  summary
  exit $(( p || s ))
fi

scripts/rabbitmq-node.sh start "$NODE_NAME" "$NODE_PORT" || exit 1
trap 'scripts/rabbitmq-node.sh stop "$NODE_NAME" "$NODE_PORT"' EXIT
IMPORTD_TEST_AMQP_PORT=$NODE_PORT IMPORTD_TEST_RABBITMQ_NODE="$NODE_NAME@localhost" serial >"$LOG" 2>&1 &
serial_pid=$!
parallel; p=$?
wait "$serial_pid"; s=$?
echo
echo "=============== serial phase (own RabbitMQ node $NODE_NAME@localhost:$NODE_PORT) ==============="
cat "$LOG"
summary
[ "$p" -eq 0 ] || echo "make test: the parallel phase failed (exit $p)" >&2
[ "$s" -eq 0 ] || echo "make test: the serial phase failed (exit $s)" >&2
exit $(( p || s ))
