"""ringline.nvme: struct nvme_uring_cmd encoding checked against the
kernel's layout; the 128-byte-SQE ring and its completions on every
backend; end to end on a generic NVMe character device where one exists."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

pytestmark = pytest.mark.ringline_only


@pytest.fixture
def nvme():
    from ringline import nvme as mod
    return mod


@pytest.fixture
def core():
    from ringline._core import core as mod
    return mod


# ---- encoding ---------------------------------------------------------------

def test_ioctl_numbers(nvme, core):
    assert nvme.CMD_SIZE == 72
    assert nvme.NVME_URING_CMD_IO == 0xC0484E80       # _IOWR('N', 0x80, 72 bytes)
    assert nvme.NVME_IOCTL_ID == 0x4E40               # _IO('N', 0x40)
    abi = core.nvme_abi()
    assert abi["cmd_size"] == 72
    assert abi["cmd_io"] == nvme.NVME_URING_CMD_IO
    assert abi["ioctl_id"] == nvme.NVME_IOCTL_ID
    if abi["kernel_cmd_size"]:       # <linux/nvme_ioctl.h> was there at build time
        assert abi["kernel_cmd_size"] == 72
        assert abi["kernel_cmd_io"] == nvme.NVME_URING_CMD_IO


def test_layout_matches_kernel_struct(nvme, core):
    abi = core.nvme_abi()
    if not abi["kernel_offsets"]:
        pytest.skip("<linux/nvme_ioctl.h> was not available when the core was built")
    # Offsets of opcode, flags, nsid, cdw2, cdw3, metadata, addr,
    # metadata_len, data_len, cdw10..cdw15, timeout_ms in the kernel's
    # struct nvme_uring_cmd, against our struct format.
    fmt = nvme.CMD_FORMAT
    fields = struct.Struct(fmt)
    sizes = [struct.calcsize("<" + c) for c in fmt[1:]]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    ours = [offsets[i] for i in (0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)]
    assert ours == abi["kernel_offsets"]
    assert fields.size == 72


@pytest.mark.parametrize("kw", [
    dict(opcode=2, nsid=1, addr=0x7F0012345000, data_len=4096, cdw10=7, cdw12=7),
    dict(opcode=1, nsid=0xFFFFFFFE, addr=1, data_len=512, cdw10=0xFFFFFFFF, cdw11=0x12,
         cdw12=0xFFFF, cdw13=3, cdw14=4, cdw15=5, timeout_ms=1000, flags=1,
         cdw2=9, cdw3=10, metadata=0xABCDEF, metadata_len=8),
    dict(opcode=0, nsid=1, addr=0, data_len=0),
])
def test_encoding_matches_c_struct(nvme, core, kw):
    kw = dict(kw)
    opcode, nsid, addr, data_len = (kw.pop(k) for k in ("opcode", "nsid", "addr", "data_len"))
    py = nvme.encode_cmd(opcode, nsid, addr, data_len, **kw)
    c = core.nvme_encode_cmd_c(opcode, nsid, addr, data_len, **kw)
    assert len(py) == 72
    assert py == c


def test_rw_command_fields(nvme):
    lba = (5 << 32) | 0x1234
    cmd = nvme.rw_cmd(nvme.NVME_CMD_READ, 1, lba, 8, 0x1000, 4096)
    vals = struct.unpack(nvme.CMD_FORMAT, cmd)
    assert vals[0] == 0x02                 # opcode: read
    assert vals[3] == 1                    # nsid
    assert vals[7] == 0x1000               # addr
    assert vals[9] == 4096                 # data_len
    assert vals[10] == 0x1234 and vals[11] == 5     # SLBA low / high
    assert vals[12] == 7                   # NLB, 0-based
    with pytest.raises(ValueError):
        nvme.rw_cmd(nvme.NVME_CMD_READ, 1, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        nvme.rw_cmd(nvme.NVME_CMD_READ, 1, -1, 1, 0, 512)
    err = nvme.NvmeError(0x281, "read")
    assert err.sct == 2 and err.sc == 0x81 and "0x281" in str(err)


# ---- the passthrough ring, without a device ---------------------------------------

def test_uring_cmd_ring_completes_on_both_backends(loop, run, nvme, tmp_path):
    # A regular file has no ->uring_cmd: the kernel completes the command
    # with -EOPNOTSUPP.  That goes through the whole path: 128-byte SQE,
    # 32-byte CQE, the loop noticing the ring's fd, the future, the buffer.
    path = tmp_path / "not-nvme"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    async def main():
        dev = nvme.NvmeDevice(asyncio.get_running_loop(), fd, str(path), 1, 512)
        assert "not-nvme" in repr(dev)
        buf = bytearray(1024)
        with pytest.raises(OSError) as ei:
            await dev.readinto(buf, 0)
        assert ei.value.errno == 95 and ei.value.filename == str(path)
        buf.extend(b"x")                   # no longer exported: released at its completion
        with pytest.raises(OSError):
            await dev.write(0, bytes(512))
        with pytest.raises(OSError):
            await dev.flush()
        with pytest.raises(ValueError, match="whole number"):
            await dev.write(0, b"x" * 100)
        with pytest.raises(ValueError, match="whole number"):
            await dev.read(0, 0)
        results = await asyncio.gather(*(dev.read(i, 1) for i in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, OSError) and r.errno == 95 for r in results)
        await dev.close()
        await dev.close()
        with pytest.raises(ValueError, match="closed"):
            await dev.flush()
    run(main())


# ---- end to end --------------------------------------------------------------------

def _device():
    from ringline import nvme
    devs = nvme.generic_devices()
    if not devs:
        pytest.skip("no generic NVMe character device (/dev/ngXnY) on this machine")
    dev = devs[0]
    if not os.access(dev, os.R_OK | os.W_OK):
        pytest.skip(f"no read/write permission on {dev}")
    return dev


def test_end_to_end_read(run, nvme):
    path = _device()

    async def main():
        dev = await nvme.open(path)
        try:
            a = await dev.read(0, 1)
            b = await dev.read(0, 1)
            assert len(a) == dev.lba_size and a == b
            await dev.flush()
        finally:
            await dev.close()
    run(main())


@pytest.mark.skipif(os.environ.get("RINGLINE_NVME_WRITE_TEST") != "1",
                    reason="writes to the device: set RINGLINE_NVME_WRITE_TEST=1 to allow")
def test_end_to_end_write_read(run, nvme):
    path = _device()

    async def main():
        dev = await nvme.open(path)
        try:
            lba = int(os.environ.get("RINGLINE_NVME_TEST_LBA", "0"))
            saved = await dev.read(lba, 1)
            data = os.urandom(dev.lba_size)
            await dev.write(lba, data)
            await dev.flush()
            assert await dev.read(lba, 1) == data
            await dev.write(lba, saved)
            await dev.flush()
        finally:
            await dev.close()
    run(main())
