"""ringline.fs: asynchronous file I/O in the ring.

asyncio (and uvloop) have no file I/O of their own: libraries hand each call
to a thread.  On ringline's io_uring backend every operation here is an
io_uring request (OPENAT, READ, WRITE, FSYNC, STATX, RENAMEAT, UNLINKAT,
MKDIRAT, CLOSE, FTRUNCATE, and SPLICE for :func:`copy`); on the poll backend
(and for an opcode the kernel's ring lacks) the same operations run on a
bounded thread pool, since epoll says a regular file is always ready.  The
API is the same either way::

    async with ringline.fs.open("data.bin", "rb") as f:
        header = await f.read(16)
        block = await f.pread(4096, offset=1 << 20)

    async with ringline.fs.open("log.txt") as f:      # text mode
        async for line in f:
            ...

    st = await ringline.fs.stat("data.bin")           # an os.stat_result
    await ringline.fs.copy("data.bin", "copy.bin")    # splice, in the kernel

Buffers handed to the kernel stay alive until the kernel is done with them,
even when the awaiting task is cancelled; a cancelled operation is cancelled
in the ring (IORING_OP_ASYNC_CANCEL).  Errors are the OSError subclasses
os.open() and os.stat() raise (FileNotFoundError, PermissionError, ...),
with errno and the file name(s).

Direct I/O: ``open(path, "rb", direct=True)`` opens with O_DIRECT.  Offsets,
sizes and buffer addresses must then be aligned (the file system's
direct-I/O alignment, from statx, else 4096); :func:`aligned_buffer`
allocates suitable memory, and a misaligned request raises ValueError before
anything is submitted.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import locale
import mmap
import os
import stat as _stat

from ._core import core as _core

__all__ = (
    "AsyncFile",
    "aligned_buffer",
    "copy",
    "exists",
    "lstat",
    "mkdir",
    "open",
    "read_bytes",
    "read_text",
    "remove",
    "rename",
    "replace",
    "rmdir",
    "stat",
    "unlink",
    "write_bytes",
    "write_text",
)

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_REMOVEDIR = 0x200
_AT_SYMLINK_NOFOLLOW = 0x100
_IORING_OP_SPLICE = 30
_ECANCELED = 125

#: Read-ahead / write-behind buffer of files (bytes).
BUFFER_SIZE = 64 * 1024
#: Copy: bytes per splice pair (and pipe size), and pairs in flight.
COPY_CHUNK = 1 << 20
COPY_LANES = 4
_DEFAULT_DIO_ALIGN = 4096

_builtin_open = open


def _get_loop():
    loop = asyncio.get_running_loop()
    if not isinstance(loop, _core.LoopCore):
        raise RuntimeError(
            "ringline.fs needs a ringline event loop (ringline.run(), "
            "asyncio.run(..., loop_factory=ringline.new_event_loop)); "
            f"the running loop is {type(loop).__name__}")
    return loop


async def _open_fd(loop, path, flags, perms=0o666):
    """openat in the ring; an fd that arrives for a cancelled caller is
    closed, never leaked."""
    fut = _core.fs_open(loop, path, flags, perms)
    try:
        return await fut
    except asyncio.CancelledError:
        # The open may have completed just before the cancel reached the
        # task (asyncio then throws CancelledError and drops the result).
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            os.close(fut.result())
        raise


async def _fstat(loop, fd, name=None):
    return await _core.fs_statx(loop, b"", fd, _AT_EMPTY_PATH, 0, name)


def _parse_mode(mode: str):
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: {mode!r}")
    creating = "x" in modes
    reading = "r" in modes
    writing = "w" in modes
    appending = "a" in modes
    updating = "+" in modes
    text = "t" in modes
    binary = "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if creating:
        flags = os.O_EXCL | os.O_CREAT
    elif reading:
        flags = 0
    elif writing:
        flags = os.O_CREAT | os.O_TRUNC
    else:
        flags = os.O_APPEND | os.O_CREAT
    if updating:
        flags |= os.O_RDWR
    elif reading:
        flags |= os.O_RDONLY
    else:
        flags |= os.O_WRONLY
    readable = reading or updating
    writable = not reading or updating
    return flags, readable, writable, appending, binary


def _text_encoding(encoding):
    encoding = io.text_encoding(encoding)
    if encoding == "locale":
        encoding = locale.getpreferredencoding(False)
    return encoding


# Encodings whose encode() of a decoded string gives back its byte count
# exactly (no BOM, no state): tell() in text mode is computed with them.
_SIMPLE_CODECS = {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}


def open(path, mode: str = "r", *, direct: bool = False, encoding: str | None = None,
         errors: str | None = None, newline: str | None = None, perms: int = 0o666):
    """Open a file; ``await`` the result or use it with ``async with``.

    ``mode`` is as for the built-in open() ("r", "rb", "w", "a+", "xb",
    ...).  ``direct=True`` opens with O_DIRECT (binary mode only).
    ``perms`` is the permission of a file created (less the umask).
    """
    flags, readable, writable, appending, binary = _parse_mode(mode)
    if binary:
        if encoding is not None:
            raise ValueError("binary mode doesn't take an encoding argument")
        if errors is not None:
            raise ValueError("binary mode doesn't take an errors argument")
        if newline is not None:
            raise ValueError("binary mode doesn't take a newline argument")
    elif newline not in (None, "", "\n", "\r", "\r\n"):
        raise ValueError(f"illegal newline value: {newline!r}")
    if direct:
        if not binary:
            raise ValueError("direct I/O needs binary mode ('rb', 'wb', ...)")
        flags |= os.O_DIRECT
    if isinstance(path, int):
        raise TypeError("ringline.fs.open() takes a path, not a file descriptor")
    os.fspath(path)     # TypeError for what is not a path
    return _Opener(path, mode, flags, readable, writable, appending, binary, direct,
                   encoding, errors, newline, perms)


class _Opener:
    """``await fs.open(...)`` or ``async with fs.open(...) as f``."""

    __slots__ = ("_args", "_file")

    def __init__(self, *args):
        self._args = args
        self._file = None

    def __await__(self):
        return self._open().__await__()

    async def _open(self):
        (path, mode, flags, readable, writable, appending, binary, direct,
         encoding, errors, newline, perms) = self._args
        loop = _get_loop()
        fd = await _open_fd(loop, path, flags, perms)
        try:
            st = await _fstat(loop, fd, path)
            if _stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, os.strerror(21), path)
            align = None
            if direct:
                align = await _core.fs_statx(loop, b"", fd, _AT_EMPTY_PATH, 1, path)
                if align is None:
                    align = (_DEFAULT_DIO_ALIGN, _DEFAULT_DIO_ALIGN)
            f = AsyncFile(loop, fd, path, mode, readable, writable, appending, binary,
                          st, align, encoding, errors, newline)
        except BaseException:
            os.close(fd)
            raise
        return f

    async def __aenter__(self):
        self._file = await self._open()
        return self._file

    async def __aexit__(self, *exc):
        f, self._file = self._file, None
        if f is not None:
            await f.close()


class AsyncFile:
    """A file opened by :func:`open`.  Reads and writes are coroutines;
    ``tell()`` is not (the position is kept here, and every read or write
    names its offset to the kernel)."""

    def __init__(self, loop, fd, name, mode, readable, writable, appending, binary,
                 st, align, encoding, errors, newline):
        self._loop = loop
        self._fd = fd
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._append = appending
        self._binary = binary
        self._seekable = _stat.S_ISREG(st.st_mode) or _stat.S_ISBLK(st.st_mode)
        self._regular = self._seekable
        self._align = align                  # (mem, offset) for O_DIRECT, or None
        self._pos = st.st_size if (appending and self._seekable) else 0
        self._rbuf = b""                     # read-ahead, bytes at [_pos, ...)
        self._wbuf = bytearray()             # write-behind, ends at _pos
        self._closed = False
        if not binary:
            self.encoding = _text_encoding(encoding)
            self.errors = errors or "strict"
            self.newline = newline
            self._cbuf = ""                  # decoded, untranslated text
            self._eof = False
            self._decoder = None
            self._encoder = codecs.getincrementalencoder(self.encoding)(self.errors)
            self._reset_decoder()
        # Bound methods used on hot paths.
        self._fs_read = _core.fs_read
        self._fs_write = _core.fs_write

    # ---- basics --------------------------------------------------------

    def __repr__(self):
        state = " closed" if self._closed else ""
        return f"<ringline.fs.AsyncFile name={self.name!r} mode={self.mode!r}{state}>"

    def fileno(self) -> int:
        self._check_closed()
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def direct(self) -> bool:
        return self._align is not None

    @property
    def alignment(self):
        """(memory, offset) alignment direct I/O needs, or None."""
        return self._align

    def readable(self) -> bool:
        self._check_closed()
        return self._readable

    def writable(self) -> bool:
        self._check_closed()
        return self._writable

    def seekable(self) -> bool:
        self._check_closed()
        return self._seekable

    def _check_closed(self):
        if self._closed:
            raise ValueError("I/O operation on closed file.")

    def _check_readable(self):
        self._check_closed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")

    def _check_writable(self):
        self._check_closed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            import warnings
            warnings.warn(f"unclosed file {self!r}", ResourceWarning, source=self)
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._closed = True

    async def close(self) -> None:
        """Flush buffered writes and close (in the ring)."""
        if self._closed:
            return
        try:
            if self._wbuf:
                await self.flush()
        finally:
            self._closed = True
            await _core.fs_close(self._loop, self._fd, self.name)

    # ---- positions -----------------------------------------------------

    def _offset(self, pos):
        # -1 asks the kernel to use (and move) the file's own position:
        # for pipes and ttys, and for O_APPEND writes.
        return pos if self._seekable else -1

    def tell(self) -> int:
        """The current position (bytes).  In text mode, exact while what is
        buffered can be re-encoded to its byte count (UTF-8, Latin-1, ...)."""
        self._check_closed()
        if not self._seekable:
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if self._binary:
            return self._pos
        if not self._cbuf:
            pending, flag = self._decoder.getstate()
            return self._pos - len(pending) - (flag & 1)
        if codecs.lookup(self.encoding).name not in _SIMPLE_CODECS:
            raise io.UnsupportedOperation(
                f"tell() with decoded text buffered is not supported for {self.encoding!r}")
        pending, flag = self._decoder.getstate()
        try:
            rest = len(self._cbuf.encode(self.encoding, "strict"))
        except UnicodeError:
            raise io.UnsupportedOperation(
                "tell(): the buffered text does not re-encode exactly") from None
        return self._pos - rest - len(pending) - (flag & 1)

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position; returns the new one.  Text mode, like
        io.TextIOWrapper, allows only seek(tell()-value) and seeks to 0 or
        the end."""
        self._check_closed()
        if not self._seekable:
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if whence == os.SEEK_CUR:
            if not self._binary and offset != 0:
                raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
            target = self.tell() + offset
        elif whence == os.SEEK_END:
            if not self._binary and offset != 0:
                raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
            if self._wbuf:
                await self.flush()
            st = await _fstat(self._loop, self._fd, self.name)
            target = st.st_size + offset
        elif whence == os.SEEK_SET:
            target = offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise OSError(22, "Invalid argument", self.name)
        if self._wbuf:
            await self.flush()
        self._pos = target
        self._drop_read_buffers()
        return target

    def _drop_read_buffers(self):
        self._rbuf = b""
        if not self._binary:
            self._cbuf = ""
            self._eof = False
            self._reset_decoder()

    # ---- direct I/O checks ---------------------------------------------

    def _check_direct(self, offset, size, buf=None, writable=False):
        mem, off_align = self._align
        if offset is not None and offset % off_align:
            raise ValueError(
                f"direct I/O: offset {offset} is not a multiple of {off_align} "
                f"(the file system's direct-I/O alignment)")
        if size % off_align:
            raise ValueError(
                f"direct I/O: size {size} is not a multiple of {off_align} "
                f"(the file system's direct-I/O alignment)")
        if buf is not None:
            addr, _ = _core.fs_buffer_info(buf, writable)
            if addr % mem:
                raise ValueError(
                    f"direct I/O: the buffer's address {addr:#x} is not a multiple of "
                    f"{mem}; allocate it with ringline.fs.aligned_buffer()")

    async def _direct_read(self, n, offset):
        self._check_direct(offset, n)
        buf = aligned_buffer(n)
        got = await _core.fs_readinto(self._loop, self._fd, buf, offset, True, self.name)
        return buf[:got]

    # ---- reading (bytes) -----------------------------------------------

    async def _raw_read(self, n, fill=True):
        data = await self._fs_read(self._loop, self._fd, n, self._offset(self._pos),
                                   fill and self._regular, self.name)
        return data

    async def _read_all_bytes(self):
        chunks = []
        if self._regular:
            st = await _fstat(self._loop, self._fd, self.name)
            want = max(st.st_size - self._pos, 0) + 1
        else:
            want = BUFFER_SIZE
        while True:
            data = await self._raw_read(want, fill=True)
            if not data:
                break
            self._pos += len(data)
            chunks.append(data)
            if self._regular and len(data) < want:
                break           # a short read of a regular file: EOF
            want = max(want, BUFFER_SIZE)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _read_bytes(self, n):
        if self._wbuf:
            await self.flush()
        rb = self._rbuf
        if rb:
            if n >= 0 and len(rb) >= n:
                self._rbuf = rb[n:]
                self._pos += n
                return rb[:n]
            self._rbuf = b""
            self._pos += len(rb)
            if n >= 0:
                n -= len(rb)
        if self._align is not None:
            if n < 0:
                st = await _fstat(self._loop, self._fd, self.name)
                a = self._align[1]
                n = -(-max(st.st_size - self._pos, 0) // a) * a
                if n == 0:
                    return rb
            data = await self._direct_read(n, self._pos)
            self._pos += len(data)
            return rb + data if rb else data
        if n < 0:
            data = await self._read_all_bytes()
        elif n == 0:
            data = b""
        else:
            data = await self._raw_read(n, fill=True)
            self._pos += len(data)
        return rb + data if rb else data

    async def _fill_rbuf(self) -> bool:
        """Append one chunk to the read-ahead buffer; False at EOF."""
        off = self._pos + len(self._rbuf)
        data = await self._fs_read(self._loop, self._fd, BUFFER_SIZE,
                                   off if self._seekable else -1, False, self.name)
        if not data:
            return False
        self._rbuf = self._rbuf + data if self._rbuf else data
        return True

    async def read(self, n: int = -1):
        """Read up to n bytes (characters in text mode); all to EOF if n < 0."""
        self._check_readable()
        if n is None:
            n = -1
        if self._binary:
            return await self._read_bytes(n)
        return await self._read_text(n)

    async def readinto(self, buf) -> int:
        """Read into a writable buffer; returns the number of bytes read."""
        self._check_readable()
        if not self._binary:
            raise io.UnsupportedOperation("readinto() needs binary mode")
        if self._wbuf:
            await self.flush()
        mv = memoryview(buf).cast("B")
        n = len(mv)
        got = 0
        if self._rbuf:
            got = min(n, len(self._rbuf))
            mv[:got] = self._rbuf[:got]
            self._rbuf = self._rbuf[got:]
            self._pos += got
            if got == n:
                return got
        if self._align is not None:
            self._check_direct(self._pos, n - got, mv[got:], True)
        more = await _core.fs_readinto(self._loop, self._fd, mv[got:] if got else buf,
                                       self._offset(self._pos), self._regular, self.name)
        self._pos += more
        return got + more

    def _at(self, offset: int, buf=None, *, reading: bool) -> None:
        """What pread/preadinto/pwrite check first: the mode, the offset,
        direct-I/O alignment of buf.  Not a coroutine: pread is a hot path,
        and only the write-behind flush the callers do next can wait (a
        direct file has no write-behind)."""
        if reading:
            self._check_readable()
        else:
            self._check_writable()
        if offset < 0:
            raise ValueError("negative offset")
        if buf is not None and self._align is not None:
            mv = memoryview(buf).cast("B")
            self._check_direct(offset, len(mv), mv, reading)

    async def pread(self, n: int, offset: int) -> bytes:
        """Read up to n bytes at offset; the position does not move."""
        self._at(offset, reading=True)
        if self._wbuf:
            await self.flush()
        if self._align is not None:
            return await self._direct_read(n, offset)
        return await _core.fs_read(self._loop, self._fd, n, offset, True, self.name)

    async def preadinto(self, buf, offset: int) -> int:
        """Read into buf at offset; the position does not move."""
        self._at(offset, buf, reading=True)
        if self._wbuf:
            await self.flush()
        return await _core.fs_readinto(self._loop, self._fd, buf, offset, True, self.name)

    async def readline(self, size: int = -1):
        """One line (with its terminator), b''/'' at EOF."""
        self._check_readable()
        if size is None:
            size = -1
        if not self._binary:
            return await self._readline_text(size)
        if self._align is not None:
            raise io.UnsupportedOperation("readline() is not available with direct I/O")
        if self._wbuf:
            await self.flush()
        start = 0
        while True:
            i = self._rbuf.find(b"\n", start)
            if i >= 0:
                end = i + 1
                break
            if 0 <= size <= len(self._rbuf):
                end = size
                break
            start = len(self._rbuf)
            if not await self._fill_rbuf():
                end = len(self._rbuf)
                break
        if 0 <= size < end:
            end = size
        line = self._rbuf[:end]
        self._rbuf = self._rbuf[end:]
        self._pos += len(line)
        return line

    async def readlines(self, hint: int = -1) -> list:
        lines = []
        total = 0
        while True:
            line = await self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __aiter__(self):
        self._check_readable()
        return self

    async def __anext__(self):
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # ---- reading (text) ------------------------------------------------

    def _reset_decoder(self):
        dec = codecs.getincrementaldecoder(self.encoding)(self.errors)
        if self.newline is None or self.newline == "":
            # Holds a trailing '\r' back so '\r\n' split across reads is
            # seen whole; translation is ours (see _translate).
            dec = io.IncrementalNewlineDecoder(dec, translate=False)
        self._decoder = dec

    def _translate(self, s):
        if self.newline is None and "\r" in s:
            return s.replace("\r\n", "\n").replace("\r", "\n")
        return s

    async def _fill_text(self) -> bool:
        """Decode one more chunk into _cbuf; False at EOF."""
        if self._eof:
            return False
        if self._rbuf:
            data, self._rbuf = self._rbuf, b""
        else:
            data = await self._fs_read(self._loop, self._fd, BUFFER_SIZE,
                                       self._offset(self._pos), False, self.name)
        self._pos += len(data)
        if not data:
            self._eof = True
            text = self._decoder.decode(b"", final=True)
            if text:
                self._cbuf += text
                return True
            return False
        self._cbuf += self._decoder.decode(data)
        return True

    async def _read_text(self, n):
        if self._wbuf:
            await self.flush()
        if n < 0:
            while await self._fill_text():
                pass
            s, self._cbuf = self._cbuf, ""
            return self._translate(s)
        out = []
        have = 0
        while have < n:
            while len(self._cbuf) <= n - have and await self._fill_text():
                pass
            if not self._cbuf:
                break
            k = n - have
            piece = self._cbuf[:k]
            if self.newline is None and piece.endswith("\r") and self._cbuf[k:k + 1] == "\n":
                k += 1
                piece += "\n"
            self._cbuf = self._cbuf[k:]
            piece = self._translate(piece)
            out.append(piece)
            have += len(piece)
        return "".join(out)

    def _find_eol(self, s, start):
        """(index just past the first line end in s at or after start) or -1."""
        nl = self.newline
        if nl is None or nl == "":
            i = s.find("\n", start)
            j = s.find("\r", start)
            if j >= 0 and (i < 0 or j < i):
                if j + 1 < len(s):
                    return j + 2 if s[j + 1] == "\n" else j + 1
                return -2 if not self._eof else j + 1   # need one more char
            return i + 1 if i >= 0 else -1
        i = s.find(nl, start)
        return i + len(nl) if i >= 0 else -1

    async def _readline_text(self, size):
        if self._wbuf:
            await self.flush()
        start = 0
        while True:
            end = self._find_eol(self._cbuf, start)
            if end >= 0:
                break
            if 0 <= size <= len(self._cbuf):
                end = size
                break
            if end == -1:
                start = max(len(self._cbuf) - 1, 0)
            if not await self._fill_text():
                end = len(self._cbuf)
                break
        if 0 <= size < end:
            end = size
        line, self._cbuf = self._cbuf[:end], self._cbuf[end:]
        return self._translate(line)

    # ---- writing -------------------------------------------------------

    async def write(self, data) -> int:
        """Write all of data (bytes-like, or str in text mode); returns its
        length.  Small writes are gathered (up to BUFFER_SIZE) and go out on
        flush(), close(), fsync(), a seek or a read."""
        self._check_writable()
        if self._binary:
            if isinstance(data, str):
                raise TypeError("a bytes-like object is required, not 'str'")
            n = len(memoryview(data).cast("B")) if not isinstance(data, (bytes, bytearray)) else len(data)
            raw = data
        else:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            n = len(data)
            s = data
            nl = self.newline
            if nl not in (None, "", "\n") and "\n" in s:
                s = s.replace("\n", nl)
            elif nl is None and os.linesep != "\n" and "\n" in s:
                s = s.replace("\n", os.linesep)
            raw = self._encoder.encode(s)
        if self._rbuf or (not self._binary and (self._cbuf or self._eof)):
            if not self._binary and self._seekable:
                self._pos = self.tell()     # where the reader is, not the raw offset
            self._drop_read_buffers()
        if self._align is not None:
            mv = memoryview(raw).cast("B")
            self._check_direct(None if self._append else self._pos, len(mv), mv)
            wrote = await _core.fs_write(self._loop, self._fd, raw,
                                         -1 if self._append else self._offset(self._pos),
                                         self.name)
            self._pos = self._pos + wrote if not self._append else os.lseek(self._fd, 0, os.SEEK_CUR)
            return n
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else len(memoryview(raw).cast("B"))
        if size >= BUFFER_SIZE:
            if self._wbuf:
                await self.flush()
            await self._write_raw(raw)
            return n
        self._wbuf += raw
        self._pos += size
        if len(self._wbuf) >= BUFFER_SIZE:
            await self.flush()
        return n

    async def _write_raw(self, data):
        if self._append:
            await _core.fs_write(self._loop, self._fd, data, -1, self.name)
            if self._seekable:
                self._pos = os.lseek(self._fd, 0, os.SEEK_CUR)
            return
        wrote = await _core.fs_write(self._loop, self._fd, data, self._offset(self._pos),
                                     self.name)
        self._pos += wrote

    async def flush(self) -> None:
        """Write out what write() gathered."""
        self._check_closed()
        if not self._wbuf:
            return
        data = bytes(self._wbuf)
        self._wbuf.clear()
        self._pos -= len(data)
        await self._write_raw(data)

    async def pwrite(self, data, offset: int) -> int:
        """Write all of data at offset; the position does not move."""
        self._at(offset, data, reading=False)
        if self._wbuf:
            await self.flush()
        return await _core.fs_write(self._loop, self._fd, data, offset, self.name)

    async def writelines(self, lines) -> None:
        for line in lines:
            await self.write(line)

    async def fsync(self, datasync: bool = False) -> None:
        """Flush, then fsync (fdatasync with datasync=True) in the ring."""
        self._check_closed()
        if self._wbuf:
            await self.flush()
        await _core.fs_fsync(self._loop, self._fd, datasync, self.name)

    async def truncate(self, size: int | None = None) -> int:
        self._check_writable()
        if self._wbuf:
            await self.flush()
        if size is None:
            size = self.tell()
        await _core.fs_ftruncate(self._loop, self._fd, size, self.name)
        return size

    async def stat(self) -> os.stat_result:
        """fstat, via statx in the ring."""
        self._check_closed()
        return await _fstat(self._loop, self._fd, self.name)


# ---- module functions ----------------------------------------------------

async def stat(path, *, follow_symlinks: bool = True) -> os.stat_result:
    """os.stat(), via statx in the ring."""
    flags = 0 if follow_symlinks else _AT_SYMLINK_NOFOLLOW
    return await _core.fs_statx(_get_loop(), path, _AT_FDCWD, flags, 0)


async def lstat(path) -> os.stat_result:
    return await stat(path, follow_symlinks=False)


async def exists(path) -> bool:
    try:
        await stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


async def rename(src, dst) -> None:
    """os.rename() (replaces an existing dst, as on POSIX), in the ring."""
    await _core.fs_rename(_get_loop(), src, dst)


replace = rename


async def remove(path) -> None:
    """os.remove(): unlink a file, in the ring."""
    await _core.fs_unlink(_get_loop(), path, 0)


unlink = remove


async def rmdir(path) -> None:
    """os.rmdir(): UNLINKAT with AT_REMOVEDIR, in the ring."""
    await _core.fs_unlink(_get_loop(), path, _AT_REMOVEDIR)


async def mkdir(path, mode: int = 0o777, *, exist_ok: bool = False) -> None:
    """os.mkdir(), in the ring; exist_ok ignores an existing directory."""
    try:
        await _core.fs_mkdir(_get_loop(), path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
        st = await stat(path)
        if not _stat.S_ISDIR(st.st_mode):
            raise


async def read_bytes(path) -> bytes:
    async with open(path, "rb") as f:
        return await f.read()


async def write_bytes(path, data) -> int:
    async with open(path, "wb") as f:
        return await f.write(data)


async def read_text(path, encoding: str | None = None, errors: str | None = None,
                    newline: str | None = None) -> str:
    async with open(path, "r", encoding=encoding, errors=errors, newline=newline) as f:
        return await f.read()


async def write_text(path, data: str, encoding: str | None = None,
                     errors: str | None = None, newline: str | None = None) -> int:
    async with open(path, "w", encoding=encoding, errors=errors, newline=newline) as f:
        return await f.write(data)


def aligned_buffer(size: int):
    """Zeroed, page-aligned (so direct-I/O-aligned) writable memory of
    `size` bytes: an mmap object (use memoryview() to slice it)."""
    if size <= 0:
        raise ValueError("aligned_buffer() size must be positive")
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


async def copy(src, dst) -> int:
    """Copy the contents of file src to dst (created or truncated, as
    shutil.copyfile does); returns the number of bytes copied.  On io_uring
    the data moves file -> pipe -> file by SPLICE, in the kernel, several
    chunks in flight; elsewhere copy_file_range on the thread pool."""
    loop = _get_loop()
    fin = await _open_fd(loop, src, os.O_RDONLY)
    try:
        st = await _fstat(loop, fin, src)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, os.strerror(21), src)
        fout = await _open_fd(loop, dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            if _core.fs_ring_opcode(loop, _IORING_OP_SPLICE) and _stat.S_ISREG(st.st_mode):
                return await _splice_copy(loop, fin, fout, st.st_size, src)
            return await loop.run_in_executor(_core.fs_pool(), _copy_blocking, fin, fout)
        finally:
            await _core.fs_close(loop, fout, dst)
    finally:
        await _core.fs_close(loop, fin, src)


def _copy_blocking(fin, fout) -> int:
    total = 0
    try:
        while True:
            n = os.copy_file_range(fin, fout, 1 << 30)
            if n == 0:
                return total
            total += n
    except OSError as exc:
        if exc.errno not in (18, 22, 38, 95) or total:   # EXDEV EINVAL ENOSYS EOPNOTSUPP
            raise
    while True:
        data = os.read(fin, 1 << 20)
        if not data:
            return total
        mv = memoryview(data)
        while mv:
            mv = mv[os.write(fout, mv):]
        total += len(data)


async def _splice_copy(loop, fin, fout, size, name) -> int:
    pipes = []
    try:
        lanes = max(1, min(COPY_LANES, -(-size // COPY_CHUNK)))
        chunk = COPY_CHUNK
        for _ in range(lanes):
            r, w = os.pipe2(os.O_CLOEXEC)
            pipes.append((r, w))
            try:
                import fcntl
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, COPY_CHUNK)
            except OSError:
                pass
            import fcntl
            chunk = min(chunk, fcntl.fcntl(w, fcntl.F_GETPIPE_SZ))
        state = {"next": 0, "eof": False, "total": 0}

        async def move(r, w, off, n):
            """Move n bytes at off; returns bytes moved (short at EOF)."""
            done = 0
            while done < n:
                m = n - done
                f1, f2 = _core.fs_splice_pair(loop, fin, off + done, w, r, fout, off + done,
                                              m, name)
                try:
                    n1 = await f1
                finally:
                    if not f1.done() or f1.cancelled() or f1.exception() is not None:
                        f2.cancel()
                n2 = await f2
                if n2 == -_ECANCELED:
                    n2 = 0
                # The pipe holds n1 - n2 bytes still: write them out.
                while n2 < n1:
                    k = await _core.fs_splice(loop, r, -1, fout, off + done + n2, n1 - n2,
                                              0, False, name)
                    if k <= 0:
                        raise OSError(5, "splice to the destination moved nothing", name)
                    n2 += k
                done += n1
                if n1 < m:
                    state["eof"] = True
                    break
            state["total"] += done
            return done

        async def lane(r, w):
            while not state["eof"]:
                off = state["next"]
                if off >= size:
                    return
                n = min(chunk, size - off)
                state["next"] = off + n
                await move(r, w, off, n)

        tasks = [loop.create_task(lane(r, w)) for r, w in pipes]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if not state["eof"]:
            # The file may have grown since statx: copy on to EOF.
            r, w = pipes[0]
            off = size
            while True:
                got = await move(r, w, off, chunk)
                off += got
                if got < chunk:
                    break
        return state["total"]
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
