"""Fuzz target: NVMe passthrough command encoding (ringline/nvme.py
encode_cmd / rw_cmd, the core's nvme_encode_cmd_c and BigRing.submit).

Every field gets arbitrary values (in range, at the edges, negative, huge,
other types).  The pure-Python encoder (struct) and the C one (the
compiler's layout of struct nvme_uring_cmd) must agree: the same 72 bytes,
or both refuse.  rw_cmd must put SLBA and the block count where the spec
says, or raise ValueError.  BigRing.submit takes any bytes and any cmd_op:
it must refuse a command longer than the SQE's 80-byte area instead of
cutting it, and a command on an fd that is not an NVMe device (a pipe:
random commands must never go to a real device; /dev/null will not do,
Linux 6.x's null device accepts every URING_CMD) must come back as an
error completion, never a crash.
"""

from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Input, main  # noqa: E402

from ringline import nvme  # noqa: E402
from ringline._core import core  # noqa: E402

FIELDS = ("opcode", "nsid", "addr", "data_len", "cdw10", "cdw11", "cdw12", "cdw13",
          "cdw14", "cdw15", "timeout_ms", "flags", "cdw2", "cdw3", "metadata",
          "metadata_len")
BITS = {"opcode": 8, "flags": 8, "addr": 64, "metadata": 64}
REFUSED = (struct.error, OverflowError, TypeError, ValueError)

_ring = None
_pipe = None
_next_ud = 1


def field_value(inp: Input, bits: int):
    kind = inp.int_in(0, 9)
    if kind <= 5:
        return inp.uint(bits // 8)                  # in range
    if kind == 6:
        return (1 << bits) + inp.int_in(-2, 2)      # at the edge
    return inp.value()


def check_encoders(inp: Input) -> None:
    kw = {}
    for f in FIELDS:
        if inp.int_in(0, 2):
            kw[f] = field_value(inp, BITS.get(f, 32))
    kw.setdefault("opcode", 0)
    kw.setdefault("nsid", 0)
    kw.setdefault("addr", 0)
    kw.setdefault("data_len", 0)
    try:
        py = nvme.encode_cmd(**kw)
    except REFUSED as exc:
        py = exc
    try:
        c = core.nvme_encode_cmd_c(**kw)
    except REFUSED as exc:
        c = exc
    if isinstance(py, bytes) or isinstance(c, bytes):
        assert py == c, ("Python and C encodings differ", kw, py, c)
        assert len(py) == nvme.CMD_SIZE == 72
        fields = struct.unpack(nvme.CMD_FORMAT, py)
        assert fields[0] == kw["opcode"] and fields[3] == kw["nsid"], (kw, fields)


def check_rw(inp: Input) -> None:
    opcode = inp.choice((nvme.NVME_CMD_READ, nvme.NVME_CMD_WRITE))
    nsid = inp.uint(4)
    lba = inp.choice((inp.uint(8), inp.weird_int()))
    nblocks = inp.choice((inp.int_in(1, 65536), inp.weird_int()))
    addr = inp.uint(8)
    data_len = inp.uint(4)
    try:
        cmd = nvme.rw_cmd(opcode, nsid, lba, nblocks, addr, data_len)
    except ValueError:
        assert not (0 <= lba < 1 << 64 and 1 <= nblocks <= 0x10000), (lba, nblocks)
        return
    assert 0 <= lba < 1 << 64 and 1 <= nblocks <= 0x10000, (lba, nblocks)
    f = struct.unpack(nvme.CMD_FORMAT, cmd)
    assert (f[0], f[3], f[7], f[9]) == (opcode, nsid, addr, data_len)
    assert f[10] | (f[11] << 32) == lba and (f[12] & 0xFFFF) + 1 == nblocks, (lba, nblocks, f)


def check_submit(inp: Input) -> None:
    global _ring, _pipe, _next_ud
    if _ring is None:
        try:
            _ring = core.BigRing(8)
        except OSError:
            _ring = False               # no SQE128 rings here: the encoders are still fuzzed
        _pipe = os.pipe()
    if _ring is False:
        return
    cmd = inp.sized_bytes(100)
    cmd_op = inp.choice((nvme.NVME_URING_CMD_IO, inp.uint(4)))
    ud = _next_ud
    _next_ud += 1
    try:
        _ring.submit(_pipe[0], cmd_op, cmd, ud)
    except ValueError:
        assert len(cmd) > 80, len(cmd)
        return
    except OSError:
        return
    assert len(cmd) <= 80, ("a command longer than the SQE's 80 bytes was cut, not refused", len(cmd))
    got = []
    for _ in range(1000):
        got += _ring.reap()
        if got:
            break
    assert got, "no completion for a URING_CMD on a pipe"
    for u, res, _, _ in got:
        assert u == ud and res < 0, (u, ud, res)


def one_input(data: bytes) -> None:
    inp = Input(data)
    which = inp.int_in(0, 2)
    if which == 0:
        check_encoders(inp)
    elif which == 1:
        check_rw(inp)
    else:
        check_submit(inp)


if __name__ == "__main__":
    main(one_input, "nvme")
