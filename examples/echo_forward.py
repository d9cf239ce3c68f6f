"""Echo server that sends straight from the kernel's receive buffer.

    python examples/echo_forward.py --port 7000

forward_recv_buf(view) queues a send whose bytes are the provided buffer
the kernel filled: no copy in user space.  The buffer stays out of the ring
until the kernel has taken the bytes, then goes back.  (The poll backend
has no kernel-provided buffers: there it copies, like send_nowait.)
A framing example: a line protocol with NEED_MORE, replying per line.
"""

import argparse

import ringline


class Echo(ringline.Handler):
    async def on_accept(self, conn):
        def echo(view):
            conn.forward_recv_buf(view)
            return len(view)

        while await conn.with_data(echo):
            pass


class LineUpper(ringline.Handler):
    """Uppercases each line; a partial line waits for the rest (NEED_MORE)."""

    async def on_accept(self, conn):
        def line(view):
            i = bytes(view).find(b"\n")
            if i < 0:
                return ringline.NEED_MORE
            conn.send_nowait(bytes(view[:i + 1]).upper())
            return i + 1

        while await conn.with_data(line):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--lines", action="store_true", help="serve the line protocol instead")
    args = ap.parse_args()
    shutdown, workers = (ringline.Builder(ringline.Config(workers=args.workers))
                         .bind(("0.0.0.0", args.port))
                         .launch(LineUpper if args.lines else Echo))
    print(f"listening on :{args.port}, {len(workers)} workers; Ctrl-C to stop")
    shutdown.wait_on_signal()


if __name__ == "__main__":
    main()
