"""A small TCP proxy for fault tests: it can cut every connection or stall them silently.

``stall()`` keeps the sockets open but stops moving bytes, which is what a network partition
looks like to both ends: only heartbeats can notice it. ``cut()`` resets every connection.
"""

from __future__ import annotations

import select
import socket
import threading


class Proxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``port`` is chosen by the OS."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._down = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        #: Connections accepted so far: a client reconnecting shows here.
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        listener = self._listener
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed:
                if not self._flowing.wait(0.1):
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    if not self._flowing.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: a socket cut() closed meanwhile (fileno -1)
            return
        finally:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def stall(self) -> None:
        """Stop forwarding; connections stay open (a partition)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        """Whether traffic is stalled now (``stall`` called, ``resume`` not yet)."""
        return not self._flowing.is_set()

    def cut(self) -> None:
        """Reset every open connection; new ones are accepted."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        _close(pairs)

    def down(self) -> None:
        """The service is gone: connections reset and new ones refused (like a stopped server)."""
        self._down = True
        try:  # close() alone leaves the socket listening while _accept blocks in accept() on it
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.cut()

    def reset(self, upstream_ports: set[int]) -> int:
        """Reset the connections whose upstream local port is in ``upstream_ports`` (what a
        kernel does when its retransmissions give up); returns how many were reset."""
        with self._lock:
            doomed = [p for p in self._pairs if _port(p[1]) in upstream_ports]
            self._pairs = [p for p in self._pairs if p not in doomed]
        _close(doomed)
        return len(doomed)

    def upstream_ports(self) -> set[int]:
        """Local ports of the open connections to the target (the target sees them as peer ports)."""
        with self._lock:
            pairs = list(self._pairs)
        ports = set()
        for _, upstream in pairs:
            try:
                ports.add(upstream.getsockname()[1])
            except OSError:
                pass
        return ports

    def refuses(self) -> bool:
        """Whether a connection attempt to the proxy is refused now (observed, not assumed)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    def up(self) -> None:
        """The service is back on the same port."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._down = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def _port(sock: socket.socket) -> int:
    try:
        return int(sock.getsockname()[1])
    except OSError:
        return -1


def _close(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    """Shut both ends of each pair down and close them (a reset as the peers see it)."""
    for pair in pairs:
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass
