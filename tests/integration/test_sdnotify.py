"""The worker speaks sd_notify to a datagram socket of the test's own, as systemd's would be."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import Broker, wait_for


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def _receive(sock: socket.socket, got: list[tuple[float, str]]) -> list[str]:
    """Read every datagram waiting; return all states so far, one per line of each datagram."""
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return [state for _, state in got]
        got.extend((time.monotonic(), line) for line in data.decode().splitlines())


def test_worker_notifies_ready_once_consuming_then_watchdog_then_stopping(
        broker: Broker, start_worker, notify_socket: socket.socket, tmp_path: Path):
    got: list[tuple[float, str]] = []
    with start_worker("-Q", "default", "-c", "2", NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
                      WATCHDOG_USEC="1000000") as w:
        wait_for(lambda: "READY=1" in _receive(notify_socket, got), 30, what="READY=1")
        # READY=1 means consuming: both children's consumers are registered on the broker.
        assert broker.channel().queue_declare("default", passive=True).consumer_count == 2
        wait_for(lambda: _receive(notify_socket, got).count("WATCHDOG=1") >= 4, 10, what="watchdog pings")
        ready_at = next(t for t, s in got if s == "READY=1")
        pings = [t for t, s in got if s == "WATCHDOG=1"]
        assert all(t >= ready_at for t in pings)
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert all(g >= 0.3 for g in gaps), gaps  # not faster than half of WATCHDOG_USEC, within a tick
        # (no upper bound in seconds: that pings keep coming is the count of 4 waited for above)
        assert any(s.startswith("STATUS=2/2 children consuming default") for _, s in got)
        w.proc.terminate()
        assert w.proc.wait(30) == 0
        states = _receive(notify_socket, got)
    assert states.count("READY=1") == 1
    assert "STOPPING=1" in states
    assert states.index("STOPPING=1") > states.index("READY=1")
