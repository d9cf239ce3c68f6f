"""set_flush_interval / Config.flush_interval: what completion callbacks
queue is submitted every N completions of a long batch (io_uring)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

pytestmark = pytest.mark.ringline_only


async def _echo_many(loop, nconn, rounds):
    """nconn protocol echoes over socketpairs, every connection written at
    once each round: the completions of a round arrive as one batch."""
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    pairs = [socket.socketpair() for _ in range(nconn)]
    for a, b in pairs:
        b.setblocking(False)
        await loop.connect_accepted_socket(Echo, a)
    try:
        for r in range(rounds):
            payload = os.urandom(64)
            for _, b in pairs:
                b.send(payload)         # all before the loop polls: one batch
            for _, b in pairs:
                got = b""
                while len(got) < len(payload):
                    got += await loop.sock_recv(b, 64 - len(got))
                assert got == payload
    finally:
        for a, b in pairs:
            b.close()


@pytest.mark.parametrize("interval", [0, 1, 4], ids=["off", "every", "every4"])
def test_flush_interval(backend, loop_factory, interval):
    if backend != "io_uring":
        pytest.skip("io_uring only (the poll backend has nothing to submit)")
    from ringline._core import core
    old = core.set_flush_interval(interval)
    try:
        loop = loop_factory()
        try:
            loop.run_until_complete(_echo_many(loop, 16, 20))
            flushes = loop.stats()["flushes"]
        finally:
            loop.close()
    finally:
        core.set_flush_interval(old)
    if interval == 0:
        assert flushes == 0
    else:
        assert flushes > 0


def test_config_flush_interval_validated():
    import ringline
    with pytest.raises(ValueError, match="flush_interval"):
        ringline.Config(flush_interval=-1).validate()
    assert ringline.Config(flush_interval=16).validate().flush_interval == 16
