"""The upload store: both backends through the same tests (file:// on a temp dir, s3:// on a
real S3 server process), plus what only an object store does (broken reads, presigned parts)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from importd.config import Settings
from importd.imports import storage
from tests.support.proxy import Proxy
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture
from tests.support.s3proxy import StoreProxy

MIB = 1024 * 1024


def blob(size: int) -> bytes:
    """Bytes that differ at every offset (a wrong range shows), made fast."""
    seed = hashlib.sha256(uuid.uuid4().bytes).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(MIB // 32))
    return (block * (size // MIB + 1))[:size]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[storage.Store]:
    if request.param == "file":
        yield storage.FileStore(tmp_path / "uploads")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield server.store(f"t-{uuid.uuid4().hex[:8]}/uploads")


class Cut(io.RawIOBase):
    """A source that breaks (like a client that went away) after ``after`` bytes."""

    def __init__(self, data: bytes, after: int) -> None:
        self.data, self.after, self.pos = data, after, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.after:
            raise ConnectionResetError("client went away")
        out = self.data[self.pos:self.pos + min(n, self.after - self.pos)]
        self.pos += len(out)
        return out


def leftovers(store: storage.Store) -> tuple[list[str], list[tuple[str, str]]]:
    return store.keys(), store.open_multiparts()


def test_a_stream_is_stored_whole_with_its_size_and_sha256(store: storage.Store):
    data = blob(2 * storage.PART_BYTES + 3 * MIB)  # several parts on S3, the last a short one
    stored = store.write("a.csv", io.BytesIO(data))
    assert (stored.key, stored.size, stored.sha256) == ("a.csv", len(data), hashlib.sha256(data).hexdigest())
    assert store.size("a.csv") == len(data)
    with store.open("a.csv") as f:
        assert f.read() == data
    assert store.checksum("a.csv") == stored
    assert leftovers(store) == (["a.csv"], [])


@pytest.mark.parametrize("part_bytes,size", [(MIB, 3 * MIB), (MIB, 3 * MIB + 5), (3 * MIB + 7, 2 * MIB), (1000, 2500)])
def test_part_checksums_hash_each_slice_of_part_bytes_in_the_same_read_as_the_whole(
        store: storage.Store, part_bytes: int, size: int):
    data = blob(size)
    store.write("p.csv", io.BytesIO(data))
    whole, digests = store.part_checksums("p.csv", part_bytes)
    slices = [data[i:i + part_bytes] for i in range(0, size, part_bytes)]
    assert digests == [hashlib.sha256(s).hexdigest() for s in slices]
    assert (whole.size, whole.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert storage.composite_sha256(digests) == hashlib.sha256(
        b"".join(hashlib.sha256(s).digest() for s in slices)).hexdigest()
    assert store.part_checksums("p.csv", 0) == (whole, [])


def test_a_small_stream_is_one_object(store: storage.Store):
    stored = store.write("small.csv", io.BytesIO(b"id,name\n1,a\n"))
    assert stored.size == 12
    with store.open("small.csv") as f:
        assert f.read() == b"id,name\n1,a\n"


@pytest.mark.parametrize("after", [MIB, storage.PART_BYTES + MIB], ids=["first-part", "second-part"])
def test_a_write_cut_midway_leaves_no_object_and_no_open_upload(store: storage.Store, after: int):
    data = blob(3 * storage.PART_BYTES)
    with pytest.raises(ConnectionResetError):
        store.write("cut.csv", Cut(data, after))  # type: ignore[arg-type]
    assert leftovers(store) == ([], [])
    assert not store.exists("cut.csv")


def test_reads_start_at_any_offset_and_seek(store: storage.Store):
    data = blob(5 * MIB + 17)
    store.write("r.csv", io.BytesIO(data))
    with store.open("r.csv", 3 * MIB + 5) as f:
        assert f.read(100) == data[3 * MIB + 5:3 * MIB + 105]
        assert f.tell() == 3 * MIB + 105
        assert f.seek(0, os.SEEK_END) == len(data)
        f.seek(7)
        assert f.read(MIB) == data[7:7 + MIB]
        f.seek(len(data) - 10)
        assert f.read() == data[-10:]
        assert f.read(10) == b""


def test_a_ranged_read_gives_exactly_its_bytes(store: storage.Store):
    data = blob(3 * MIB + 5)
    store.write("rr.csv", io.BytesIO(data))
    assert store.read_range("rr.csv", 0, 17) == data[:17]
    assert store.read_range("rr.csv", 2 * MIB + 3, MIB) == data[2 * MIB + 3:3 * MIB + 3]
    assert store.read_range("rr.csv", len(data) - 4, 100) == data[-4:]  # fewer at the end
    assert store.read_range("rr.csv", 5, 0) == b""


def test_keys_in_a_folder_and_objects_written_into_one(store: storage.Store):
    for key in ("a.csv", "rejects/j1/x.csv", "rejects/j1/y.csv", "rejects/j2/z.csv"):
        store.write(key, io.BytesIO(b"id\n"))
    assert store.keys("rejects/j1/") == ["rejects/j1/x.csv", "rejects/j1/y.csv"]
    assert storage.clear_rejects(store, "j1", keep="rejects/j1/y.csv") == 1
    assert store.keys() == ["a.csv", "rejects/j1/y.csv", "rejects/j2/z.csv"]


def test_delete_removes_the_object_and_a_missing_key_is_not_found(store: storage.Store):
    store.write("d.csv", io.BytesIO(b"x\n"))
    store.delete("d.csv")
    store.delete("d.csv")  # already gone: no error
    with pytest.raises(storage.ObjectNotFound):
        store.size("d.csv")
    with pytest.raises(storage.ObjectNotFound):
        store.open("d.csv")


@pytest.mark.parametrize("key", ["../out.csv", "/etc/passwd", "", "a/../../b.csv"])
def test_a_key_escaping_the_store_is_refused(store: storage.Store, key: str):
    with pytest.raises(storage.BadKey):
        store.write(key, io.BytesIO(b"x"))
    with pytest.raises(storage.BadKey):
        store.size(key)


def test_a_symlink_out_of_the_file_store_is_refused(tmp_path: Path):
    store = storage.FileStore(tmp_path / "uploads")
    (tmp_path / "secret.csv").write_bytes(b"secret\n")
    store.root.mkdir()
    (store.root / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(storage.BadKey):
        store.open("link.csv")


def test_a_read_broken_midway_is_reopened_at_its_offset(s3_server: S3Server):  # noqa: F811
    data = blob(40 * MIB)
    direct = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    direct.write("broken.csv", io.BytesIO(data))
    with Proxy("127.0.0.1", s3_server.port) as proxy:
        via = storage.open_url(direct.url, f"http://127.0.0.1:{proxy.port}")
        with via.open("broken.csv", 1) as f:
            first = f.read(4 * MIB)
            proxy.cut()  # every connection reset: the ranged GET in flight breaks
            rest = f.read()
            gets = f.raw.gets  # type: ignore[attr-defined]
    assert first + rest == data[1:]
    assert gets >= 2  # reopened, from where it broke (the bytes above would differ otherwise)


def engine_reads(f: Any, header_read: int, data_offset: int) -> bytes:
    """What the engine does with an object before its batches: the header (read with room to
    spare), its bytes again for the reject file, the size, then the data from after the header."""
    f.read(header_read)
    f.seek(0)
    head = f.read(data_offset)
    f.seek(0, os.SEEK_END)
    f.seek(data_offset)
    return bytes(head + f.read())


def test_an_object_s_head_read_again_and_then_its_data_cost_one_get(s3_server: S3Server):  # noqa: F811
    data = blob(20 * MIB)
    store = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    store.write("h.csv", io.BytesIO(data))
    with store.open("h.csv", 0, len(data)) as f:
        assert engine_reads(f, 4 * MIB + 5, 51) == data
        assert f.raw.gets == 1  # type: ignore[attr-defined]
        assert not f.raw.head  # type: ignore[attr-defined]  # dropped once reading went past it
        f.seek(3)  # before the dropped head: read again from the store, from there
        assert f.read(10) == data[3:13] and f.raw.gets == 2  # type: ignore[attr-defined]


def test_a_seek_opens_no_get_and_only_a_read_elsewhere_opens_one(s3_server: S3Server):  # noqa: F811
    data = blob(3 * MIB)
    store = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    store.write("s.csv", io.BytesIO(data))
    with store.open("s.csv", 10) as f:
        raw = f.raw  # type: ignore[attr-defined]
        for offset, whence in ((0, os.SEEK_END), (5, os.SEEK_SET), (2 * MIB, os.SEEK_SET)):
            f.seek(offset, whence)
        assert raw.gets == 0
        assert f.read(100) == data[2 * MIB:2 * MIB + 100] and raw.gets == 1
        f.seek(MIB)  # behind the open GET, and no head kept (the reads did not start at 0)
        assert f.read(100) == data[MIB:MIB + 100] and raw.gets == 2


def test_a_read_broken_inside_the_kept_head_is_reopened_and_the_head_reads_back_whole(s3_server: S3Server):  # noqa: F811
    data = blob(12 * MIB)
    store = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    store.write("hb.csv", io.BytesIO(data))
    with store.open("hb.csv", 0, len(data)) as f:
        first = f.read(2 * MIB)
        f.raw.body.close()  # type: ignore[attr-defined]  # the GET's stream ends early, as a server closing it
        second = f.read(2 * MIB)  # reopened where the head ends, and still kept
        f.seek(0)
        again = f.read(4 * MIB)  # from the head, no GET
        gets = f.raw.gets  # type: ignore[attr-defined]
        rest = f.read()
    assert (first + second, again, rest) == (data[:4 * MIB], data[:4 * MIB], data[4 * MIB:])
    assert gets == 2


def test_whole_reads_and_heads_share_one_connection_to_a_keep_alive_server(tmp_path: Path):
    """boto3's pool keeps the connection once a GET was read to its end (moto closes every
    connection itself, so this needs a server that keeps them: rclone)."""
    from tests.support.s3 import disk_s3

    data = blob(3 * MIB)
    with disk_s3(tmp_path / "s3") as server:
        direct = server.server.store("k")
        direct.write("k.csv", io.BytesIO(data))
        with Proxy("127.0.0.1", server.port) as proxy:
            via = storage.open_url(direct.url, f"http://127.0.0.1:{proxy.port}")
            for _ in range(3):
                size = via.size("k.csv")
                with via.open("k.csv", 0, size) as f:
                    assert f.read() == data
            assert proxy.accepted == 1


def test_the_file_store_has_no_presigned_uploads(tmp_path: Path):
    with pytest.raises(NotImplementedError):
        storage.FileStore(tmp_path).create_multipart("x.csv")


def test_presigned_parts_upload_straight_to_the_store_and_a_missing_part_is_resent(s3_server: S3Server):  # noqa: F811
    store = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    data = blob(11 * MIB)
    chunks = [data[:5 * MIB], data[5 * MIB:10 * MIB], data[10 * MIB:]]
    upload_id = store.create_multipart("p.csv")
    urls = store.part_urls("p.csv", upload_id, [1, 2, 3])
    with httpx.Client() as http:
        for number in (1, 3):  # part 2 "dropped"
            assert http.put(urls[number], content=chunks[number - 1]).status_code == 200
        have = {p.number for p in store.list_parts("p.csv", upload_id)}
        assert have == {1, 3}
        for number in sorted({1, 2, 3} - have):  # resend only what is missing
            assert http.put(urls[number], content=chunks[number - 1]).status_code == 200
    parts = store.list_parts("p.csv", upload_id)
    assert [p.number for p in parts] == [1, 2, 3] and sum(p.size for p in parts) == len(data)
    store.complete_multipart("p.csv", upload_id, parts)
    assert store.checksum("p.csv").sha256 == hashlib.sha256(data).hexdigest()
    assert store.open_multiparts() == []


def test_an_aborted_presigned_upload_leaves_nothing(s3_server: S3Server):  # noqa: F811
    store = s3_server.store(f"t-{uuid.uuid4().hex[:8]}")
    upload_id = store.create_multipart("gone.csv")
    with httpx.Client() as http:
        http.put(store.part_urls("gone.csv", upload_id, [1])[1], content=b"x" * 100)
    store.abort_multipart("gone.csv", upload_id)
    assert leftovers(store) == ([], [])


def test_settings_choose_the_store(tmp_path: Path, s3_server: S3Server):  # noqa: F811
    legacy = storage.from_settings(Settings(upload_dir=tmp_path))
    assert isinstance(legacy, storage.FileStore) and legacy.root == tmp_path
    chosen = storage.from_settings(Settings(storage_url=f"file://{tmp_path}/x"))
    assert isinstance(chosen, storage.FileStore) and chosen.root == tmp_path / "x"
    s3 = storage.from_settings(Settings(storage_url=s3_server.url("a/b"), s3_endpoint_url=s3_server.endpoint))
    assert isinstance(s3, storage.S3Store) and (s3.bucket, s3.prefix) == (s3_server.bucket, "a/b")
    with pytest.raises(ValueError, match="IMPORTD_STORAGE_URL"):
        storage.open_url("ftp://x/y")


def test_a_job_source_is_a_key_or_a_legacy_path_inside_the_file_store(tmp_path: Path, s3_server: S3Server):  # noqa: F811
    settings = Settings(upload_dir=tmp_path / "u")
    storage.from_settings(settings).write("k.csv", io.BytesIO(b"id\n1\n"))
    assert storage.job_source(settings, "k.csv").size == 5
    assert storage.job_source(settings, str(tmp_path / "u" / "k.csv")).key == "k.csv"
    with pytest.raises(storage.BadKey, match="outside the upload directory"):
        storage.job_source(settings, "/etc/passwd")
    with pytest.raises(storage.ObjectNotFound, match="file not found: nope.csv"):
        storage.job_source(settings, "nope.csv")
    s3 = Settings(storage_url=s3_server.url("j"), s3_endpoint_url=s3_server.endpoint)
    with pytest.raises(storage.BadKey):
        storage.job_source(s3, str(tmp_path / "u" / "k.csv"))  # a host path means nothing to S3


def test_an_import_whose_s3_reads_break_midway_succeeds_in_one_attempt_with_every_row_once(
        isettings: Settings, db: Any, s3_server: S3Server):  # noqa: F811
    """The worker's reader reopens at its offset: the job neither fails nor starts again."""
    import threading

    from importd.imports import store as jobs
    from importd.imports.handlers import run_import_task
    from tests.support.importing import context
    from tests.support.infra import wait_for

    count = 200_000
    data = b"id,name,age,note\n" + b"".join(b"%d,name %d,%d,\n" % (i, i, i % 90) for i in range(1, count + 1))
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    obj = s3_server.store(prefix).write("cut.csv", io.BytesIO(data))
    job_id = uuid.uuid4().hex
    with Proxy("127.0.0.1", s3_server.port) as proxy:
        settings = replace(isettings, storage_url=s3_server.url(prefix), s3_endpoint_url=f"http://127.0.0.1:{proxy.port}")
        args = {"object": obj.as_args(), "table": "people", "mode": "resumable",
                "options": {"batch_bytes": 32 * 1024}}
        errors: list[BaseException] = []

        def run() -> None:
            try:
                run_import_task(context(settings, job_id, args))
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        worker = threading.Thread(target=run)
        worker.start()

        def checkpointed() -> bool:
            with jobs.connect(settings) as conn:
                rec = jobs.get_job(conn, job_id)
            return rec is not None and rec.checkpoint_rows > 0

        wait_for(lambda: checkpointed() or not worker.is_alive(), timeout=120, what="a batch committed")
        cut_while_running = worker.is_alive()
        proxy.cut()  # the ranged GET in flight breaks mid-file
        worker.join()
    assert cut_while_running and errors == []
    with jobs.connect(settings) as conn:
        rec = jobs.get_job(conn, job_id)
        assert rec is not None and (rec.state, rec.attempts, rec.rows_imported) == ("SUCCESS", 1, count)
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone() == (count, count)


@pytest.mark.parametrize("path", ["streamed", "presigned"])
def test_a_completed_upload_whose_answers_were_lost_is_stored_once_and_not_an_error(
        s3_server: S3Server, path: str):  # noqa: F811
    """The store completes the multipart upload but the client never hears, not even when
    botocore resends the complete (every answer is lost, as when completing a big object takes
    longer than the read timeout). The object is there whole: that is success, with no abort
    error, no object lost and no open upload left."""
    data = blob(storage.PART_BYTES + MIB)
    proxy = StoreProxy("127.0.0.1", s3_server.port)
    try:
        store = s3_server.store(f"lost-{uuid.uuid4().hex[:8]}", endpoint=proxy.endpoint)
        proxy.lose_complete_answers = 100
        if path == "streamed":
            stored = store.write("a.csv", io.BytesIO(data))
            assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        else:
            upload_id = store.create_multipart("a.csv")
            for number, url in store.part_urls("a.csv", upload_id, [1, 2]).items():
                part = data[(number - 1) * storage.PART_BYTES:number * storage.PART_BYTES]
                assert httpx.put(url, content=part).status_code == 200
            store.complete_multipart("a.csv", upload_id, store.list_parts("a.csv", upload_id))
        assert proxy.complete_answers_lost >= 2  # the first and botocore's resend
        assert leftovers(store) == (["a.csv"], [])
        with store.open("a.csv") as f:
            assert f.read() == data
    finally:
        proxy.close()


@pytest.mark.parametrize("how", ["write", "write_file", "adopt"])
def test_a_file_store_puts_the_data_and_its_name_on_disk_before_the_object_counts_as_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str):
    """A job is queued once its file is stored, and the broker fsyncs the message: the file's
    bytes and the directory entry naming it must be on disk too (fsync of both) before the
    store returns, or a power cut loses the upload of a queued job."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", spy)
    store = storage.FileStore(tmp_path / "uploads")
    data = blob(3 * MIB)
    source = tmp_path / "spool.csv"
    source.write_bytes(data)
    if how == "write":
        stored = store.write("a.csv", io.BytesIO(data))
    elif how == "write_file":
        stored = store.write_file("a.csv", source)
    else:
        stored = store.adopt("a.csv", source)
    final = store.path("a.csv")
    assert stored.size == len(data) and final.read_bytes() == data
    assert str(final.parent) in synced  # the name
    data_synced = [p for p in synced if p != str(final.parent)]
    assert data_synced and all(Path(p.removesuffix(" (deleted)")).name in (final.name, source.name)
                               or ".part" in p for p in data_synced)  # the bytes, before the rename


def importd_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("importd-")]


class Requests:
    """S3 requests the store's client sends, counted by operation (botocore's own event hook)."""

    def __init__(self, store: storage.Store) -> None:
        self.client = store.client  # type: ignore[attr-defined]
        self.seen: list[str] = []
        self.client.meta.events.register("before-call.s3", self.count)

    def count(self, model: Any, **_: Any) -> None:
        self.seen.append(model.name)

    def close(self) -> None:
        self.client.meta.events.unregister("before-call.s3", self.count)


@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_an_import_from_s3_is_one_head_and_one_get_and_leaves_no_thread(
        isettings: Settings, db: Any, s3_server: S3Server, mode: str):  # noqa: F811
    from importd.imports.handlers import run_import_task
    from tests.support.importing import context

    count = 50_000
    data = b"id,name,age,note\n" + b"".join(b"%d,name %d,%d,\n" % (i, i, i % 90) for i in range(1, count + 1))
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    obj = s3_server.store(prefix).write("one.csv", io.BytesIO(data))
    settings = replace(isettings, storage_url=s3_server.url(prefix), s3_endpoint_url=s3_server.endpoint)
    requests = Requests(storage.from_settings(settings))
    try:  # 64 KiB batches: many batches (on two COPY streams when resumable), each read from the one GET
        run_import_task(context(settings, uuid.uuid4().hex, {"object": obj.as_args(), "table": "people", "mode": mode,
                                                             "options": {"batch_bytes": 64 * 1024}}))
    finally:
        requests.close()
    assert sorted(requests.seen) == ["GetObject", "HeadObject"]
    assert db.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone() == (count, count)
    assert importd_threads() == []


def test_an_import_from_s3_cancelled_midway_leaves_no_thread(isettings: Settings, db: Any, s3_server: S3Server):  # noqa: F811
    import threading

    from importd.imports import store as jobs
    from importd.imports.handlers import run_import_task
    from importd.imports.progress import Progress
    from tests.support.importing import context
    from tests.support.infra import wait_for

    count = 200_000
    data = b"id,name,age,note\n" + b"".join(b"%d,name %d,%d,\n" % (i, i, i % 90) for i in range(1, count + 1))
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    obj = s3_server.store(prefix).write("stop.csv", io.BytesIO(data))
    settings = replace(isettings, storage_url=s3_server.url(prefix), s3_endpoint_url=s3_server.endpoint)
    job_id = uuid.uuid4().hex

    def cancel_once_rows_flow() -> None:
        progress = Progress(settings)
        wait_for(lambda: int((progress.read(job_id) or {}).get("rows", 0)) > 0, 60, 0.01, what="rows flowing")
        with jobs.connect(settings) as conn:
            jobs.request_cancel(conn, job_id)

    canceller = threading.Thread(target=cancel_once_rows_flow)
    canceller.start()
    run_import_task(context(settings, job_id, {"object": obj.as_args(), "table": "people", "mode": "resumable",
                                               "options": {"batch_bytes": 16 * 1024}}))
    canceller.join()
    with jobs.connect(settings) as conn:
        rec = jobs.get_job(conn, job_id)
    assert rec is not None and rec.state == "CANCELLED" and rec.rows_imported < count
    assert importd_threads() == []
