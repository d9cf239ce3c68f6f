"""ringline.fs on every backend: files in the ring (io_uring) or on the
thread pool (poll).  Reads, writes, positions, text mode and line
iteration, errors with errno and file names, stat, directory operations,
copy, cancellation (the buffer outlives the cancelled task; the ring really
cancels), large files, direct I/O alignment."""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import io
import os
import stat
import weakref

import pytest

import _loops

pytestmark = pytest.mark.ringline_only


@pytest.fixture
def fs():
    from ringline import fs as mod
    return mod


@pytest.fixture
def core():
    from ringline._core import core as mod
    return mod


def _hash(data):
    return hashlib.sha256(data).hexdigest()


class Buf(bytearray):
    """A bytearray that can be weakly referenced."""


# ---- which way ops run ----------------------------------------------------------

def test_ops_run_in_ring_or_pool(backend, loop, core):
    # OPENAT 18, CLOSE 19, STATX 21, READ 22, WRITE 23, FSYNC 3, SPLICE 30,
    # RENAMEAT 35, UNLINKAT 36, MKDIRAT 37
    for opcode in (18, 19, 21, 22, 23, 3, 30, 35, 36, 37):
        assert core.fs_ring_opcode(loop, opcode) == (backend == "io_uring"), opcode


def test_file_ops_are_ring_sqes(backend, loop, run, fs, tmp_path):
    if backend != "io_uring":
        pytest.skip("counts SQEs of the io_uring driver")
    path = tmp_path / "f"

    async def main():
        before = loop.stats()["sqes_submitted"]
        await fs.write_bytes(path, b"abc")
        assert await fs.read_bytes(path) == b"abc"
        return loop.stats()["sqes_submitted"] - before
    # write_bytes: open, fstat, write, close; read_bytes: open, fstat, 2 reads, close
    assert run(main()) >= 8


def test_needs_ringline_loop(fs, tmp_path):
    async def main():
        await fs.stat(tmp_path)
    with pytest.raises(RuntimeError, match="ringline event loop"):
        asyncio.run(main())


# ---- binary files ---------------------------------------------------------------

def test_write_read_roundtrip(run, fs, tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(200_000)

    async def main():
        async with fs.open(path, "wb") as f:
            assert await f.write(data[:1000]) == 1000
            assert await f.write(memoryview(data)[1000:]) == len(data) - 1000
            assert f.tell() == len(data)
        assert path.read_bytes() == data
        async with fs.open(path, "rb") as f:
            assert await f.read(10) == data[:10]
            assert f.tell() == 10
            buf = bytearray(100)
            assert await f.readinto(buf) == 100
            assert bytes(buf) == data[10:110]
            rest = await f.read()
            assert rest == data[110:]
            assert await f.read() == b""
            assert await f.read(5) == b""
    run(main())


def test_pread_pwrite_do_not_move(run, fs, tmp_path):
    path = tmp_path / "p.bin"
    path.write_bytes(b"0123456789")

    async def main():
        async with fs.open(path, "r+b") as f:
            assert await f.pread(3, 4) == b"456"
            assert f.tell() == 0
            assert await f.pwrite(b"AB", 8) == 2
            assert f.tell() == 0
            assert await f.pread(100, 7) == b"7AB"
            assert await f.pread(10, 100) == b""
            buf = bytearray(4)
            assert await f.preadinto(buf, 2) == 4 and buf == b"2345"
            with pytest.raises(ValueError):
                await f.pread(1, -1)
        assert path.read_bytes() == b"01234567AB"
    run(main())


def test_seek_tell(run, fs, tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(bytes(range(100)))

    async def main():
        async with fs.open(path, "r+b") as f:
            assert await f.seek(10) == 10
            assert await f.read(2) == bytes([10, 11])
            assert await f.seek(5, os.SEEK_CUR) == 17
            assert await f.read(1) == bytes([17])
            assert await f.seek(-2, os.SEEK_END) == 98
            assert await f.read() == bytes([98, 99])
            await f.seek(0)
            await f.write(b"\xff\xfe")
            assert f.tell() == 2
            assert await f.read(1) == bytes([2])     # flushes the write first
            with pytest.raises(OSError):
                await f.seek(-1)
            with pytest.raises(ValueError):
                await f.seek(0, 7)
        data = path.read_bytes()
        assert data[:3] == b"\xff\xfe\x02" and len(data) == 100
    run(main())


def test_append_mode(run, fs, tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"start\n")

    async def main():
        async with fs.open(path, "ab") as f:
            assert f.tell() == 6
            await f.write(b"one\n")
            await f.pwrite(b"X", 0)     # O_APPEND: Linux appends even here
            await f.write(b"two\n")
        async with fs.open(path, "a") as f:
            await f.write("three\n")
    run(main())
    assert path.read_bytes() == b"start\none\nXtwo\nthree\n"


def test_write_buffering_and_flush(run, fs, tmp_path):
    path = tmp_path / "w.bin"

    async def main():
        f = await fs.open(path, "wb")
        for i in range(1000):
            await f.write(b"%04d" % i)
        await f.flush()
        assert path.stat().st_size == 4000
        big = os.urandom(fs.BUFFER_SIZE * 3 + 7)
        await f.write(big)
        await f.fsync()
        await f.fsync(datasync=True)
        assert path.stat().st_size == 4000 + len(big)
        assert await f.truncate(10) == 10
        await f.close()
        await f.close()     # idempotent
        assert f.closed
        with pytest.raises(ValueError, match="closed file"):
            await f.write(b"x")
        with pytest.raises(ValueError, match="closed file"):
            f.tell()
    run(main())
    assert path.read_bytes() == b"0000000100"


def test_binary_readline_and_iteration(run, fs, tmp_path):
    path = tmp_path / "lines.bin"
    lines = [b"x" * n + b"\n" for n in (0, 1, 70000, 5, 200000)] + [b"tail"]
    path.write_bytes(b"".join(lines))

    async def main():
        async with fs.open(path, "rb") as f:
            got = [line async for line in f]
        assert got == lines
        async with fs.open(path, "rb") as f:
            assert await f.readline() == b"\n"
            assert await f.readline(1) == b"x"
            assert await f.readline() == b"\n"
            assert f.tell() == 3
            assert len(await f.readlines()) == 4
    run(main())


def test_mode_validation(run, fs, tmp_path):
    for bad in ("rw", "rr", "q", "bt", "+", ""):
        with pytest.raises(ValueError):
            fs.open(tmp_path / "x", bad)
    with pytest.raises(ValueError):
        fs.open(tmp_path / "x", "rb", encoding="utf-8")
    with pytest.raises(ValueError):
        fs.open(tmp_path / "x", "r", newline="x")
    with pytest.raises(TypeError):
        fs.open(3, "rb")
    path = tmp_path / "ro"
    path.write_bytes(b"abc")

    async def main():
        async with fs.open(path, "rb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write(b"x")
        async with fs.open(path, "ab") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.read()
    run(main())


def test_exclusive_create(run, fs, tmp_path):
    path = tmp_path / "excl"

    async def main():
        async with fs.open(path, "xb") as f:
            await f.write(b"1")
        with pytest.raises(FileExistsError) as ei:
            await fs.open(path, "xb")
        assert ei.value.errno == errno.EEXIST
        assert ei.value.filename == path
    run(main())


def test_open_with_async_with_and_await(run, fs, tmp_path):
    path = tmp_path / "o"
    path.write_text("hi")

    async def main():
        f = await fs.open(path)
        assert not f.closed and f.readable() and not f.writable() and f.seekable()
        assert isinstance(f.fileno(), int)
        assert "o" in repr(f)
        assert await f.read() == "hi"
        await f.close()
        async with fs.open(str(path)) as g:
            assert await g.read() == "hi"
        assert g.closed
        async with fs.open(os.fsencode(path), "rb") as g:
            assert await g.read() == b"hi"
    run(main())


# ---- text mode ------------------------------------------------------------------

@pytest.mark.parametrize("newline", [None, "", "\n", "\r", "\r\n"])
def test_text_lines_match_builtin_open(run, fs, tmp_path, newline):
    path = tmp_path / "t.txt"
    # Line ends of every kind, one '\r\n' split across the read-ahead size,
    # multi-byte characters across it too.
    body = ("é" * 10 + "\n" + "a\r\nb\rc\n" + "ü" * (fs.BUFFER_SIZE // 2 - 3) + "\r\n"
            + "z" * (fs.BUFFER_SIZE - 1) + "\r\nlast\r")
    path.write_bytes(body.encode("utf-8"))

    async def main():
        async with fs.open(path, encoding="utf-8", newline=newline) as f:
            got = [line async for line in f]
        with open(path, encoding="utf-8", newline=newline) as f:
            want = list(f)
        assert got == want
        async with fs.open(path, encoding="utf-8", newline=newline) as f:
            got_all = await f.read()
        with open(path, encoding="utf-8", newline=newline) as f:
            assert got_all == f.read()
    run(main())


def test_text_read_chars_and_tell(run, fs, tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("aé\r\nb\nc".encode("utf-8"))

    async def main():
        async with fs.open(path, encoding="utf-8") as f:
            assert await f.read(2) == "aé"
            assert f.tell() == 3
            assert await f.read(1) == "\n"         # '\r\n' translated, one char
            assert f.tell() == 5
            assert await f.readline() == "b\n"
            assert f.tell() == 7
            pos = f.tell()
            assert await f.read() == "c"
            await f.seek(pos)
            assert await f.read() == "c"
            await f.seek(0)
            assert await f.readline() == "aé\n"
            with pytest.raises(io.UnsupportedOperation):
                await f.seek(1, os.SEEK_CUR)
    run(main())


def test_text_write_newline_and_encoding(run, fs, tmp_path):
    path = tmp_path / "w.txt"

    async def main():
        await fs.write_text(path, "a\nb\n", newline="\r\n")
        assert path.read_bytes() == b"a\r\nb\r\n"
        await fs.write_text(path, "ñ\n", encoding="latin-1")
        assert path.read_bytes() == b"\xf1\n"
        assert await fs.read_text(path, encoding="latin-1") == "ñ\n"
        with pytest.raises(UnicodeDecodeError):
            await fs.read_text(path, encoding="utf-8")
        assert await fs.read_text(path, encoding="utf-8", errors="replace") == "\ufffd\n"
        async with fs.open(path, "w", encoding="utf-16") as f:
            await f.write("hé")
            await f.write("llo")
        assert path.read_text(encoding="utf-16") == "héllo"
        async with fs.open(path, encoding="utf-16") as f:
            assert await f.read() == "héllo"
        async with fs.open(path, "w") as f:
            with pytest.raises(TypeError):
                await f.write(b"bytes")
            with pytest.raises(io.UnsupportedOperation):
                await f.readinto(bytearray(1))
    run(main())


def test_text_read_then_write_goes_at_reader_position(run, fs, tmp_path):
    path = tmp_path / "rw.txt"
    path.write_text("line1\nline2\nline3\n")

    async def main():
        async with fs.open(path, "r+") as f:
            assert await f.readline() == "line1\n"
            await f.write("LINE2\n")
        assert path.read_text() == "line1\nLINE2\nline3\n"
    run(main())


# ---- module functions, stat, errors ---------------------------------------------------

def test_stat_matches_os_stat(run, fs, tmp_path):
    path = tmp_path / "st"
    path.write_bytes(b"x" * 1234)
    link = tmp_path / "ln"
    link.symlink_to(path)

    async def main():
        st = await fs.stat(path)
        ref = os.stat(path)
        assert isinstance(st, os.stat_result)
        for name in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid",
                     "st_size", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks",
                     "st_rdev"):
            assert getattr(st, name) == getattr(ref, name), name
        assert st.st_mtime == pytest.approx(ref.st_mtime)
        assert tuple(st) == tuple(ref)
        lst = await fs.lstat(link)
        assert stat.S_ISLNK(lst.st_mode)
        assert (await fs.stat(link)).st_ino == ref.st_ino
        async with fs.open(path, "rb") as f:
            assert (await f.stat()).st_size == 1234
        assert await fs.exists(path)
        assert not await fs.exists(tmp_path / "missing")
    run(main())


def test_errors_carry_errno_and_filename(run, fs, tmp_path):
    missing = tmp_path / "missing"
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_bytes(b"")

    async def main():
        cases = [
            (fs.open(missing, "rb"), FileNotFoundError, errno.ENOENT, missing),
            (fs.open(tmp_path, "rb"), IsADirectoryError, errno.EISDIR, tmp_path),
            (fs.open(tmp_path, "wb"), IsADirectoryError, errno.EISDIR, tmp_path),
            (fs.open(afile / "x", "rb"), NotADirectoryError, errno.ENOTDIR, afile / "x"),
            (fs.stat(missing), FileNotFoundError, errno.ENOENT, missing),
            (fs.remove(missing), FileNotFoundError, errno.ENOENT, missing),
            (fs.rmdir(full), OSError, errno.ENOTEMPTY, full),
            (fs.rmdir(afile), NotADirectoryError, errno.ENOTDIR, afile),
            (fs.mkdir(full), FileExistsError, errno.EEXIST, full),
            (fs.mkdir(missing / "a" / "b"), FileNotFoundError, errno.ENOENT, missing / "a" / "b"),
            (fs.read_bytes(missing), FileNotFoundError, errno.ENOENT, missing),
            (fs.copy(missing, afile), FileNotFoundError, errno.ENOENT, missing),
        ]
        for coro, exc_type, err, name in cases:
            with pytest.raises(exc_type) as ei:
                await coro
            assert ei.value.errno == err, (coro, ei.value)
            assert ei.value.filename == name, (coro, ei.value)
            assert os.strerror(err) in str(ei.value)
        with pytest.raises(FileNotFoundError) as ei:
            await fs.rename(missing, tmp_path / "dst")
        assert ei.value.filename == missing and ei.value.filename2 == tmp_path / "dst"
        assert "->" in str(ei.value)
        with pytest.raises(ValueError, match="null"):
            await fs.stat("a\0b")
    run(main())


def test_directory_ops_rename_remove(run, fs, tmp_path):
    d = tmp_path / "d"

    async def main():
        await fs.mkdir(d, 0o750)
        assert stat.S_IMODE(os.stat(d).st_mode) & 0o777 == 0o750 & ~_umask()
        await fs.mkdir(d, exist_ok=True)
        await fs.write_bytes(d / "a", b"A")
        await fs.write_bytes(d / "b", b"B")
        await fs.rename(d / "a", d / "c")
        assert not (d / "a").exists() and (d / "c").read_bytes() == b"A"
        await fs.replace(d / "b", d / "c")            # replaces, as os.replace
        assert (d / "c").read_bytes() == b"B"
        await fs.remove(d / "c")
        await fs.rmdir(d)
        assert not d.exists()
    run(main())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_read_write_helpers(run, fs, tmp_path):
    path = tmp_path / "h"

    async def main():
        assert await fs.write_bytes(path, b"\x00\x01") == 2
        assert await fs.read_bytes(path) == b"\x00\x01"
        assert await fs.write_text(path, "héllo\n") == 6
        assert await fs.read_text(path) == "héllo\n"
        assert await fs.read_bytes(path) == "héllo\n".encode()
        await fs.write_bytes(path, b"")
        assert await fs.read_bytes(path) == b""
    run(main())


# ---- large files and concurrency ------------------------------------------------------

def test_large_file(run, fs, tmp_path):
    path = tmp_path / "large.bin"
    block = os.urandom(1 << 20)
    size = (48 << 20) + 12345
    data = (block * 49)[:size]

    async def main():
        async with fs.open(path, "wb") as f:
            await f.write(data)                       # one big write
        assert path.stat().st_size == size
        assert _hash(await fs.read_bytes(path)) == _hash(data)
        async with fs.open(path, "rb") as f:           # many reads
            h = hashlib.sha256()
            while True:
                chunk = await f.read(3 << 20)
                if not chunk:
                    break
                h.update(chunk)
            assert h.hexdigest() == _hash(data)
            assert await f.pread(10, size - 5) == data[-5:]
    run(main(), timeout=60)


def test_concurrent_preads(run, fs, tmp_path):
    path = tmp_path / "c.bin"
    data = os.urandom(4 << 20)
    path.write_bytes(data)
    import random
    rnd = random.Random(7)
    offs = [rnd.randrange(0, len(data) - 4096) for _ in range(2000)]

    async def main():
        async with fs.open(path, "rb") as f:
            it = iter(offs)

            async def worker():
                for off in it:
                    assert await f.pread(4096, off) == data[off:off + 4096]
            await asyncio.gather(*(worker() for _ in range(64)))
    run(main(), timeout=60)


# ---- copy ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 65535, (1 << 20) + 1, (5 << 20) + 4097])
def test_copy(run, fs, tmp_path, size):
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    data = os.urandom(size)
    src.write_bytes(data)
    dst.write_bytes(b"old content that is longer" * 100000)   # truncated by copy

    async def main():
        assert await fs.copy(src, dst) == size
    run(main(), timeout=60)
    assert _hash(dst.read_bytes()) == _hash(data)


def test_copy_small_chunks_many_lanes(run, fs, tmp_path, monkeypatch):
    monkeypatch.setattr(fs, "COPY_CHUNK", 64 * 1024)
    monkeypatch.setattr(fs, "COPY_LANES", 3)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)

    async def main():
        assert await fs.copy(src, dst) == len(data)
    run(main(), timeout=60)
    assert dst.read_bytes() == data


def test_copy_directory_refused(run, fs, tmp_path):
    async def main():
        with pytest.raises(IsADirectoryError):
            await fs.copy(tmp_path, tmp_path / "x")
    run(main())


# ---- cancellation ---------------------------------------------------------------

def test_cancelled_read_keeps_buffer_and_cancels_in_ring(backend, loop, run, fs, core, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)     # a writer: open does not block
    try:
        async def main():
            f = await fs.open(fifo, "rb")
            assert not f.seekable()
            base = core.fs_inflight(loop)
            buf = Buf(64)
            ref = weakref.ref(buf)
            task = asyncio.ensure_future(f.readinto(buf))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not task.done()
            if backend == "io_uring":
                assert core.fs_inflight(loop) == base + 1    # pending in the ring
            task.cancel()
            del buf
            gc.collect()
            # The op still holds the buffer (exported: the kernel may write it).
            assert ref() is not None
            with pytest.raises(BufferError):
                ref().extend(b"x")
            with pytest.raises(asyncio.CancelledError):
                await task
            if backend == "io_uring":
                # The ring cancels the read: its final completion arrives
                # without any data, and the buffer is let go.
                for _ in range(200):
                    if core.fs_inflight(loop) == base and ref() is None:
                        break
                    await asyncio.sleep(0.005)
                assert core.fs_inflight(loop) == base
                gc.collect()
                assert ref() is None
                os.write(wfd, b"after")
                # Nothing was consumed by the cancelled read.
                assert await f.read(5) == b"after"
            else:
                # The pool thread is still blocked in read(2): the buffer
                # stays alive until it returns.
                await asyncio.sleep(0.05)
                gc.collect()
                assert ref() is not None
                os.write(wfd, b"unblock")
                for _ in range(200):
                    gc.collect()
                    if ref() is None:
                        break
                    await asyncio.sleep(0.005)
                assert ref() is None
                os.write(wfd, b"after")
                assert await f.read(5) == b"after"
            await f.close()
        run(main())
    finally:
        os.close(wfd)


def test_cancelled_write_task_does_not_corrupt(run, fs, tmp_path):
    path = tmp_path / "cw"
    data = os.urandom(8 << 20)

    async def main():
        async with fs.open(path, "wb") as f:
            task = asyncio.ensure_future(f.pwrite(data, 0))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            # Whatever the kernel wrote, it wrote from our (still alive) data.
            await asyncio.sleep(0.05)
        got = path.read_bytes()
        assert got == data[:len(got)]
    run(main())


# ---- direct I/O -------------------------------------------------------------------

def _direct_ok(directory) -> str | None:
    probe = os.path.join(directory, ".odirect-probe")
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as exc:
        return f"O_DIRECT refused on {directory}: {exc.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


def test_aligned_buffer(fs):
    buf = fs.aligned_buffer(10000)
    from ringline._core import core
    addr, n = core.fs_buffer_info(buf, True)
    assert n == 10000 and addr % 4096 == 0
    assert bytes(buf[:4]) == b"\0\0\0\0"
    with pytest.raises(ValueError):
        fs.aligned_buffer(0)


def test_direct_io(run, fs, tmp_path):
    reason = _direct_ok(tmp_path)
    if reason:
        pytest.skip(reason)
    path = tmp_path / "direct.bin"
    data = os.urandom(64 * 1024)
    path.write_bytes(data)

    async def main():
        async with fs.open(path, "r+b", direct=True) as f:
            assert f.direct
            mem, off = f.alignment
            assert mem >= 1 and off >= 1 and 4096 % off == 0
            # aligned: works
            buf = fs.aligned_buffer(8192)
            assert await f.preadinto(buf, 4096) == 8192
            assert bytes(buf) == data[4096:4096 + 8192]
            assert await f.pread(4096, 0) == data[:4096]
            assert await f.read(4096) == data[:4096]
            assert f.tell() == 4096
            # misaligned: ValueError before anything is submitted
            with pytest.raises(ValueError, match="offset 100 is not a multiple"):
                await f.pread(4096, 100)
            with pytest.raises(ValueError, match="size 100 is not a multiple"):
                await f.pread(100, 0)
            with pytest.raises(ValueError, match="size"):
                await f.preadinto(memoryview(buf)[:1000], 0)
            if mem > 1:
                with pytest.raises(ValueError, match="aligned_buffer"):
                    await f.preadinto(memoryview(buf)[1:1 + 4096], 0)
                with pytest.raises(ValueError, match="aligned_buffer"):
                    await f.pwrite(memoryview(buf)[1:1 + 4096], 0)
            with pytest.raises(ValueError, match="size"):
                await f.pwrite(b"x" * 10, 0)
            # aligned write, read back
            out = fs.aligned_buffer(4096)
            out[:] = b"\xab" * 4096
            assert await f.pwrite(out, 8192) == 4096
            assert await f.pread(4096, 8192) == b"\xab" * 4096
            # read to EOF rounds the request up to the alignment
            await f.seek(0)
            assert await f.read() == data[:8192] + b"\xab" * 4096 + data[12288:]
            with pytest.raises(io.UnsupportedOperation):
                await f.readline()
        with pytest.raises(ValueError, match="binary"):
            fs.open(path, "r", direct=True)
    run(main())
    assert path.read_bytes()[8192:12288] == b"\xab" * 4096


def test_requests_larger_than_one_op(run, fs, core, tmp_path):
    # Reads and writes bigger than one op may move (1 GiB) go on from where
    # the last op stopped; shrink the cap to see that on small data.
    old = core._fs_set_chunk(4096)
    try:
        data = os.urandom(300_001)
        path = tmp_path / "chunks"

        async def main():
            async with fs.open(path, "wb") as f:
                await f.write(data)
            assert path.read_bytes() == data
            assert await fs.read_bytes(path) == data
            async with fs.open(path, "rb") as f:
                assert await f.pread(100_000, 5) == data[5:100_005]
                buf = bytearray(200_000)
                assert await f.readinto(buf) == 200_000 and buf == data[:200_000]
                assert await f.pread(10_000, 295_000) == data[295_000:]
                assert await f.read() == data[200_000:]
        run(main())
    finally:
        core._fs_set_chunk(old)


def test_thread_pool_fallback_on_io_uring(backend, loop, run, fs, core, tmp_path):
    # An opcode the kernel's ring lacks runs on the pool: force that path.
    old = core.fs_force_threads(True)
    try:
        assert not core.fs_ring_opcode(loop, 22)
        path = tmp_path / "t"
        data = os.urandom(100_000)

        async def main():
            await fs.write_bytes(path, data)
            assert await fs.read_bytes(path) == data
            assert (await fs.stat(path)).st_size == len(data)
            assert await fs.copy(path, tmp_path / "u") == len(data)
            with pytest.raises(FileNotFoundError):
                await fs.remove(tmp_path / "missing")
        run(main())
        assert (tmp_path / "u").read_bytes() == data
    finally:
        core.fs_force_threads(old)


def test_cancelled_opens_leak_no_fd(run, fs, tmp_path):
    path = tmp_path / "o"
    path.write_bytes(b"x")

    def nfds():
        return len(os.listdir("/proc/self/fd"))

    async def main():
        before = nfds()
        for i in range(50):
            t = asyncio.ensure_future(fs.open(path, "rb"))
            for _ in range(i % 4):
                await asyncio.sleep(0)
            t.cancel()
            try:
                f = await t
            except asyncio.CancelledError:
                pass
            else:
                await f.close()
        # The pool threads finish (and close) opens that were cancelled
        # meanwhile: up to 10 s, for a loaded machine or a sanitizer build.
        for _ in range(1000):
            if nfds() == before:
                break
            await asyncio.sleep(0.01)
        assert nfds() == before
    run(main(), timeout=30)
