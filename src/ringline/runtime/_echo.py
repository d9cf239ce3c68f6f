"""Echo handlers for ``python -m ringline echo`` (and the benchmarks).

``with_data``: each received view is copied into the send pool
(send_nowait) -- one copy, from the kernel's buffer into a send slot.
``forward``: each view is sent straight from the kernel's receive buffer
(forward_recv_buf) -- no copy in user space; the buffer goes back to the
ring when the send completes.  ``send``: each received view is copied into
a bytes object and sent with ``await conn.send()`` (SEND_ZC when it is at
least ``Config.send_zc_threshold`` bytes).
"""

from __future__ import annotations

from ._handler import Handler


def _echo_fn(send):
    # Hand every received view to send() and consume it whole.
    def echo(view):
        send(view)
        return len(view)
    return echo


# The loop is in on_accept itself, not in a shared coroutine: one frame
# fewer for every resume of the handler.
class EchoWithData(Handler):
    async def on_accept(self, conn):
        echo = _echo_fn(conn.send_nowait)
        with_data = conn.with_data
        while await with_data(echo):
            pass


class EchoForward(Handler):
    async def on_accept(self, conn):
        echo = _echo_fn(conn.forward_recv_buf)
        with_data = conn.with_data
        while await with_data(echo):
            pass


class EchoSend(Handler):
    async def on_accept(self, conn):
        got = []

        def take(view):
            got.append(bytes(view))
            return len(view)

        with_data = conn.with_data
        send = conn.send
        while await with_data(take):
            for data in got:
                await send(data)
            got.clear()


class EchoStreams(Handler):
    async def on_accept(self, conn):
        reader, writer = conn.streams()
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


MODES = {
    "with_data": EchoWithData,
    "forward": EchoForward,
    "streams": EchoStreams,
    "send": EchoSend,
}
