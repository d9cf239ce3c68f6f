"""asyncio streams over a ConnCtx: ``reader, writer = conn.streams()``.

The reader is an asyncio.StreamReader whose wait for data pulls from the
connection (``with_bytes``) instead of being fed by a protocol, so read(),
readexactly(), readline(), readuntil(), async iteration and the
LimitOverrunError/IncompleteReadError rules are asyncio's own.  The writer is
an asyncio.StreamWriter over a small Transport that queues on the
connection; drain() waits for the kernel to take bytes above the high-water
mark.
"""

from __future__ import annotations

import asyncio

from ..aio._coretransport import water_marks

__all__ = ("open_streams",)


class ConnStreamReader(asyncio.StreamReader):
    def __init__(self, conn, limit, loop):
        super().__init__(limit=limit, loop=loop)
        self._conn = conn

    async def _wait_for_data(self, func_name):
        if self._waiter is not None:
            raise RuntimeError(
                f"{func_name}() called while another coroutine is already "
                f"waiting for incoming data")
        if self._eof:
            return

        def take(data):
            if data:
                self.feed_data(data)
            return len(data)

        try:
            n = await self._conn.with_bytes(take)
        except (ConnectionError, OSError) as exc:
            self.set_exception(exc)
            raise
        if n == 0:
            self.feed_eof()


class _ConnTransport(asyncio.Transport):
    def __init__(self, conn):
        super().__init__({
            "peername": conn.peer_addr,
            "sockname": conn.local_addr,
            "socket": conn.sock,
            "ssl_object": conn._sslobj,
        })
        self._conn = conn
        self._high = 64 * 1024
        self._low = 16 * 1024

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if data:
            self._conn.write_bytes(data)

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self):
        return True

    def write_eof(self):
        self._conn.shutdown_write()

    def is_closing(self):
        return self._conn.closing

    def close(self):
        self._conn.close()

    def abort(self):
        self._conn.abort()

    def get_write_buffer_size(self):
        return self._conn.send_queued

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        self._high, self._low = water_marks(high, low)

    def is_reading(self):
        return not self._conn.closing

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class _ConnStreamProtocol:
    """What StreamWriter asks of its protocol."""

    def __init__(self, conn, transport):
        self._conn = conn
        self._transport = transport

    async def _drain_helper(self):
        conn = self._conn
        if conn.send_queued > self._transport._high:
            await conn.drain(self._transport._low)
        if conn.closed and conn.send_queued:
            raise ConnectionResetError("Connection lost")

    def _get_close_waiter(self, stream):
        return self._conn.drain(0)


def open_streams(conn, limit: int = 2 ** 16):
    loop = asyncio.get_running_loop()
    reader = ConnStreamReader(conn, limit, loop)
    transport = _ConnTransport(conn)
    protocol = _ConnStreamProtocol(conn, transport)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
