"""Loop factories for paired benchmark runs of one driver setting against
another, in one harness run (../shared/bench/run.py --loop NAME=loop_variants:F,
with this directory on PYTHONPATH).  Each sets a process-global core switch
before it creates the loop; the servers run one per process, so the switch
is that server's."""

from __future__ import annotations

import ringline
from ringline._core import core


def default():
    return ringline.new_event_loop()


def whole_buffers():
    """Each receive takes a whole ring buffer (no IOU_PBUF_RING_INC)."""
    core.set_recv_incremental(False)
    return ringline.new_event_loop()


def bundles():
    """Receives in bundles (IORING_RECVSEND_BUNDLE), incremental as by default."""
    core.set_recv_bundles(True)
    return ringline.new_event_loop()


def whole_bundles():
    """Bundles over whole buffers."""
    core.set_recv_bundles(True)
    core.set_recv_incremental(False)
    return ringline.new_event_loop()


def _shape(entries, size, inc=True):
    def factory():
        core.set_recv_buffers(entries, size)
        core.set_recv_incremental(inc)
        return ringline.new_event_loop()
    return factory


# Ring shapes: entries x bytes per buffer.
ring_16x64k = _shape(16, 65536)
ring_8x256k = _shape(8, 262144)
ring_32x32k = _shape(32, 32768)


def _stream_zc(threshold):
    def factory():
        core.set_stream_send_zc(threshold)
        return ringline.new_event_loop()
    return factory


# SEND_ZC for stream transports' queued writes of at least this many bytes
# (transport/zcsend.pxi; off by default).
stream_zc_64k = _stream_zc(65536)
stream_zc_16k = _stream_zc(16384)
