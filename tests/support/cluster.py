"""A three-node RabbitMQ cluster of a test run's own (``scripts/rabbitmq-cluster.sh``).

The nodes are c<BASE>n1..n3@localhost with AMQP on BASE..BASE+2; the machine's node on 5672
is never touched. Each test module that needs a cluster picks its own BASE so that two runs
never share one. A cluster that cannot start fails the test, it never skips it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support import infra
from tests.support.infra import wait_for

SCRIPT = infra.ROOT / "scripts" / "rabbitmq-cluster.sh"
#: Seconds the script may take to start or stop three nodes.
SCRIPT_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class Cluster:
    nodes: list[str]
    ports: list[int]

    def ctl(self, *args: str, node: int = 0, check: bool = True) -> str:
        out = subprocess.run(["rabbitmqctl", "-q", "-n", self.nodes[node], *args],
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.nodes[node]} {' '.join(args)}: {out.stderr or out.stdout}")
        return out.stdout

    def url(self, vhost: str) -> str:
        """kombu's failover syntax: every node, the first one tried first."""
        return ";".join(f"amqp://guest:guest@127.0.0.1:{p}/{vhost}" for p in self.ports)

    def vhost(self) -> str:
        name = f"importd-q-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def leader(self, vhost: str, queue: str, asked: int = 0) -> int:
        """Index of the node that leads quorum queue ``queue`` (asked of node ``asked``). Other
        queues may have no leader (a classic reply queue lists none), and a quorum queue has
        none while it elects one: wait for it."""

        def found() -> str | None:
            out = self.ctl("list_queues", "-p", vhost, "name", "leader", "--no-table-headers", node=asked)
            leaders = {f[0]: f[1] for f in (line.split() for line in out.splitlines()) if len(f) == 2}
            return leaders.get(queue)

        return self.nodes.index(wait_for(found, 30, interval=0.5, what=f"a leader of {queue}"))

    def running(self, asked: int) -> int:
        """How many members node ``asked`` sees running."""
        out = self.ctl("cluster_status", "--formatter", "json", node=asked)
        return len(json.loads(out)["running_nodes"])


@contextmanager
def running_cluster(base_port: int) -> Iterator[Cluster]:
    """Start the cluster on ``base_port`` (failing the test if it cannot), stop it after."""
    started = subprocess.run([str(SCRIPT), "start", str(base_port)], capture_output=True, text=True,
                             timeout=SCRIPT_TIMEOUT_S)
    if started.returncode != 0:
        subprocess.run([str(SCRIPT), "stop", str(base_port)], capture_output=True, timeout=SCRIPT_TIMEOUT_S)
        pytest.fail(f"the test cluster did not start:\n{started.stderr[-3000:]}")
    listed = subprocess.run([str(SCRIPT), "nodes", str(base_port)], capture_output=True, text=True, check=True)
    pairs = [line.split() for line in listed.stdout.splitlines()]
    try:
        yield Cluster(nodes=[n for n, _ in pairs], ports=[int(p) for _, p in pairs])
    finally:
        subprocess.run([str(SCRIPT), "stop", str(base_port)], capture_output=True, timeout=SCRIPT_TIMEOUT_S)
