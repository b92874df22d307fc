"""Where the test services are: this machine's own, or containers as a fallback.

Default: RabbitMQ, PostgreSQL and Redis on 127.0.0.1 (the machines this project runs on have
them; `scripts/services.sh` starts them). With ``IMPORTD_TEST_CONTAINERS=1``, or when nothing
listens on 5672 and a Docker engine answers, the suite starts them with testcontainers
instead and runs ``rabbitmqctl`` inside the RabbitMQ container. Where `make test` brought the
dev stack up with ``docker compose`` (``deploy/compose.yaml``), ``rabbitmqctl`` runs in that
stack's container.

Overrides, for a run against a private broker node (``scripts/rabbitmq-node.sh start t13 5673``)
so that tests which stop the broker or change its settings disturb nobody else's run:

- ``IMPORTD_TEST_AMQP_PORT``: the AMQP port on 127.0.0.1 (default 5672);
- ``IMPORTD_TEST_RABBITMQ_NODE``: the node ``rabbitmqctl`` talks to (``rabbitmqctl -n NODE``),
  e.g. ``t13@localhost``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ["docker", "compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "exec", "-T", "rabbitmq", "rabbitmqctl"]


@dataclass
class Services:
    host: str = "127.0.0.1"
    amqp_port: int = 5672
    pg_port: int = 5432
    redis_port: int = 6379
    rabbitmqctl: list[str] = field(default_factory=lambda: ["rabbitmqctl"])
    containers: list[Any] = field(default_factory=list)

    def broker_url(self, vhost: str) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/{vhost}"

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.pg_port}/{database}"

    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def stop(self) -> None:
        for container in self.containers:
            container.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _docker_works() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=20).returncode == 0


#: Environment overrides (see the module docstring).
AMQP_PORT_ENV, RABBITMQ_NODE_ENV = "IMPORTD_TEST_AMQP_PORT", "IMPORTD_TEST_RABBITMQ_NODE"


def _local() -> Services:
    """This machine's services, with the private-node overrides applied."""
    node = os.environ.get(RABBITMQ_NODE_ENV)
    return Services(amqp_port=int(os.environ.get(AMQP_PORT_ENV, "5672")),
                    rabbitmqctl=["rabbitmqctl", *(["-n", node] if node else [])])


def discover() -> Services:
    if os.environ.get(AMQP_PORT_ENV) or os.environ.get(RABBITMQ_NODE_ENV):
        return _local()
    forced = os.environ.get("IMPORTD_TEST_CONTAINERS") == "1"
    if forced or (not _listening(5672) and _docker_works()):
        return _containers()
    if shutil.which("rabbitmqctl") is None and _docker_works():
        return Services(rabbitmqctl=COMPOSE)  # the compose dev stack on localhost ports
    return _local()


def _containers() -> Services:  # pragma: no cover - needs a Docker engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    rabbit = DockerContainer("rabbitmq:3.10").with_exposed_ports(5672)
    pg = (DockerContainer("postgres:15").with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
          .with_exposed_ports(5432))
    redis = DockerContainer("redis:7").with_exposed_ports(6379)
    for container in (rabbit, pg, redis):
        container.start()
    wait_for_logs(rabbit, "Server startup complete", timeout=120)
    wait_for_logs(pg, "database system is ready to accept connections", timeout=60)
    wait_for_logs(redis, "Ready to accept connections", timeout=30)
    rabbit_id = rabbit.get_wrapped_container().id
    return Services(host=rabbit.get_container_host_ip(), amqp_port=int(rabbit.get_exposed_port(5672)),
                    pg_port=int(pg.get_exposed_port(5432)), redis_port=int(redis.get_exposed_port(6379)),
                    rabbitmqctl=["docker", "exec", rabbit_id, "rabbitmqctl"], containers=[rabbit, pg, redis])


#: The services of this test run (decided once, at import).
CURRENT = discover()
