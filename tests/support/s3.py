"""A real S3-compatible server for tests: moto's server mode as a child process on a free
loopback port, one bucket, stopped after.

moto speaks the S3 REST API over HTTP (multipart uploads, ranged GETs, presigned URLs,
ListMultipartUploads), so the boto3 code under test makes the same requests it would make
to AWS or MinIO. A process (not moto's in-process decorator) keeps its memory out of the
test's and lets a test cut its connections through :class:`tests.support.proxy.Proxy`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start listening")


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
        server = S3Server(f"http://127.0.0.1:{port}", f"importd-test-{uuid.uuid4().hex[:8]}", port)
        server.store().client.create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
