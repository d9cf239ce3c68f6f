"""ringline.nvme: NVMe passthrough with io_uring URING_CMD.

    dev = await ringline.nvme.open("/dev/ng0n1")
    data = await dev.read(lba=0, nblocks=8)          # bytes
    await dev.write(lba=0, data=aligned)             # whole blocks
    await dev.flush()
    await dev.close()

Commands go straight to the NVMe driver's I/O queue as struct
nvme_uring_cmd (NVME_URING_CMD_IO), bypassing the block layer, in a ring of
128-byte SQEs and 32-byte CQEs that the event loop polls (io_uring backend
or poll backend alike: the kernel runs the commands either way).  Needs a
generic NVMe character device (/dev/ngXnY, Linux 5.19+) and permission to
open it (usually root).  Buffers stay alive until their command completes,
even when the awaiting task is cancelled (the command itself runs to its
end: the NVMe driver does not cancel passthrough commands).

Errors: a negative CQE result is the OSError of that errno; a positive one
is an NVMe status, raised as :class:`NvmeError` (``.status``, ``.sct``,
``.sc``).
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import itertools
import os
import re
import struct

from ._core import core as _core

__all__ = (
    "NVME_CMD_FLUSH",
    "NVME_CMD_READ",
    "NVME_CMD_WRITE",
    "NVME_URING_CMD_IO",
    "NvmeDevice",
    "NvmeError",
    "encode_cmd",
    "generic_devices",
    "open",
)

# NVMe I/O command set opcodes (NVM Command Set spec, figure "Opcodes for
# NVM Commands").
NVME_CMD_FLUSH = 0x00
NVME_CMD_WRITE = 0x01
NVME_CMD_READ = 0x02


def _IOC(direction, typ, nr, size):
    return (direction << 30) | (size << 16) | (ord(typ) << 8) | nr


#: struct nvme_uring_cmd: 72 bytes (include/uapi/linux/nvme_ioctl.h).
CMD_FORMAT = "<BBHIIIQQIIIIIIIIII"
CMD_SIZE = struct.calcsize(CMD_FORMAT)
#: _IOWR('N', 0x80, struct nvme_uring_cmd)
NVME_URING_CMD_IO = _IOC(3, "N", 0x80, CMD_SIZE)
#: _IO('N', 0x40): the namespace id of the device
NVME_IOCTL_ID = _IOC(0, "N", 0x40, 0)


def encode_cmd(opcode: int, nsid: int, addr: int = 0, data_len: int = 0, *,
               cdw10: int = 0, cdw11: int = 0, cdw12: int = 0, cdw13: int = 0,
               cdw14: int = 0, cdw15: int = 0, timeout_ms: int = 0, flags: int = 0,
               cdw2: int = 0, cdw3: int = 0, metadata: int = 0,
               metadata_len: int = 0) -> bytes:
    """The 72 bytes of a struct nvme_uring_cmd."""
    return struct.pack(CMD_FORMAT, opcode, flags, 0, nsid, cdw2, cdw3, metadata, addr,
                       metadata_len, data_len, cdw10, cdw11, cdw12, cdw13, cdw14, cdw15,
                       timeout_ms, 0)


def rw_cmd(opcode: int, nsid: int, lba: int, nblocks: int, addr: int, data_len: int) -> bytes:
    """A read or write of nblocks logical blocks at lba: SLBA in cdw10/11,
    the 0-based block count in cdw12 bits 15:0."""
    if not 1 <= nblocks <= 0x10000:
        raise ValueError(f"nblocks must be in 1..65536, got {nblocks}")
    if lba < 0 or lba >= 1 << 64:
        raise ValueError(f"lba out of range: {lba}")
    return encode_cmd(opcode, nsid, addr, data_len, cdw10=lba & 0xFFFFFFFF,
                      cdw11=lba >> 32, cdw12=nblocks - 1)


class NvmeError(OSError):
    """A command completed with an NVMe status (not an errno)."""

    def __init__(self, status: int, what: str = ""):
        self.status = status
        self.sct = (status >> 8) & 0x7       # status code type
        self.sc = status & 0xFF              # status code
        super().__init__(5, f"NVMe {what} failed: status {status:#x} "
                            f"(type {self.sct:#x}, code {self.sc:#x})")


def generic_devices() -> list[str]:
    """The generic NVMe character devices present (/dev/ngXnY)."""
    try:
        names = os.listdir("/dev")
    except OSError:
        return []
    return sorted(f"/dev/{n}" for n in names if re.fullmatch(r"ng\d+n\d+", n))


def _lba_size_from_sysfs(path: str) -> int | None:
    m = re.fullmatch(r"/dev/ng(\d+)n(\d+)", os.path.realpath(path))
    if not m:
        return None
    try:
        with builtins.open(
                f"/sys/block/nvme{m.group(1)}n{m.group(2)}/queue/logical_block_size") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


async def open(path: str, *, lba_size: int | None = None, nsid: int | None = None,
               entries: int = 64) -> "NvmeDevice":
    """Open a generic NVMe character device for passthrough I/O."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if nsid is None:
            nsid = fcntl.ioctl(fd, NVME_IOCTL_ID)
        if lba_size is None:
            lba_size = _lba_size_from_sysfs(path)
            if lba_size is None:
                raise ValueError(f"cannot tell the logical block size of {path}: pass lba_size=")
        return NvmeDevice(loop, fd, path, nsid, lba_size, entries)
    except BaseException:
        os.close(fd)
        raise


class NvmeDevice:
    """An open /dev/ngXnY: read, write and flush through URING_CMD."""

    def __init__(self, loop, fd: int, path: str, nsid: int, lba_size: int, entries: int = 64):
        self._loop = loop
        self._fd = fd
        self.path = path
        self.nsid = nsid
        self.lba_size = lba_size
        self._ring = _core.BigRing(entries)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple] = {}     # user_data -> (future, buffer view, what)
        self._closed = False
        self._idle = None
        loop.add_reader(self._ring.fileno(), self._reap)

    def __repr__(self):
        return f"<NvmeDevice {self.path} nsid={self.nsid} lba_size={self.lba_size}>"

    def fileno(self) -> int:
        return self._fd

    # ---- completions -------------------------------------------------------

    def _reap(self):
        for ud, res, result, _ in self._ring.reap():
            entry = self._pending.pop(ud, None)
            if entry is None:
                continue
            fut, view, what = entry
            if view is not None:
                view.release()      # the kernel is done with the buffer
            if not self._pending and self._idle is not None:
                self._idle.set()
            if fut.done():
                continue
            if res < 0:
                fut.set_exception(OSError(-res, f"NVMe {what}: {os.strerror(-res)}", self.path))
            elif res > 0:
                fut.set_exception(NvmeError(res, what))
            else:
                fut.set_result(result & 0xFFFFFFFF)

    def _submit(self, cmd_op: int, cmd: bytes, view, what: str):
        if self._closed:
            if view is not None:
                view.release()
            raise ValueError("the NVMe device is closed")
        ud = next(self._ids)
        fut = self._loop.create_future()
        self._pending[ud] = (fut, view, what)
        try:
            self._ring.submit(self._fd, cmd_op, cmd, ud)
        except BaseException:
            self._pending.pop(ud, None)
            if view is not None:
                view.release()
            raise
        return fut

    async def passthru(self, cmd: bytes, buf=None, *, writable: bool = True,
                       what: str = "command") -> int:
        """Submit a raw 72-byte struct nvme_uring_cmd (NVME_URING_CMD_IO);
        buf is kept alive until its completion.  Returns the result dword."""
        view = memoryview(buf) if buf is not None else None
        return await self._submit(NVME_URING_CMD_IO, cmd, view, what)

    # ---- I/O -----------------------------------------------------------------

    def _rw(self, opcode, lba, buf, writable, what):
        view = memoryview(buf).cast("B")
        if writable and view.readonly:
            view.release()
            raise TypeError("readinto() needs a writable buffer")
        n = len(view)
        if n == 0 or n % self.lba_size:
            view.release()
            raise ValueError(f"NVMe {what}: {n} bytes is not a whole number of "
                             f"{self.lba_size}-byte blocks")
        addr, _ = _core.fs_buffer_info(view, writable)
        cmd = rw_cmd(opcode, self.nsid, lba, n // self.lba_size, addr, n)
        return self._submit(NVME_URING_CMD_IO, cmd, view, what)

    async def readinto(self, buf, lba: int) -> int:
        """Read len(buf) bytes (whole blocks) from lba into buf."""
        await self._rw(NVME_CMD_READ, lba, buf, True, "read")
        return len(memoryview(buf).cast("B"))

    async def read(self, lba: int, nblocks: int = 1) -> bytes:
        buf = bytearray(nblocks * self.lba_size)
        await self.readinto(buf, lba)
        return bytes(buf)

    async def write(self, lba: int, data) -> int:
        """Write data (whole blocks) at lba; returns its length."""
        await self._rw(NVME_CMD_WRITE, lba, data, False, "write")
        return len(memoryview(data).cast("B"))

    async def flush(self) -> None:
        cmd = encode_cmd(NVME_CMD_FLUSH, self.nsid)
        await self._submit(NVME_URING_CMD_IO, cmd, None, "flush")

    async def close(self) -> None:
        """Wait for commands in flight, then close the ring and the device."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            # Even commands whose caller gave up: their buffers are in use
            # until the kernel completes them.
            self._idle = asyncio.Event()
            await self._idle.wait()
        self._loop.remove_reader(self._ring.fileno())
        self._ring.close()
        os.close(self._fd)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
