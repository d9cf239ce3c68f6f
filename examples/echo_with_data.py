"""Echo server on the runtime API: with_data + send_nowait.

    python examples/echo_with_data.py --port 7000 --workers 2

One worker per CPU by default (processes, pinned); each connection is one
task.  with_data() hands the callback a memoryview over the kernel's receive
buffer (io_uring); send_nowait() copies it into the worker's send pool and
returns, and the buffer goes back to the ring when the callback returns.
Ctrl-C (or SIGTERM) shuts down gracefully.
"""

import argparse

import ringline


class Echo(ringline.Handler):
    async def on_accept(self, conn):
        def echo(view):
            conn.send_nowait(view)
            return len(view)            # bytes consumed

        while await conn.with_data(echo):   # 0 at EOF
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    shutdown, workers = (ringline.Builder(ringline.Config(workers=args.workers))
                         .bind(("0.0.0.0", args.port))
                         .launch(Echo))
    print(f"echo on :{args.port}, {len(workers)} workers; Ctrl-C to stop")
    sig = shutdown.wait_on_signal()
    print(f"stopped by {sig.name if sig else 'worker exit'}")
    print(ringline.render_prometheus(shutdown.metrics()), end="")


if __name__ == "__main__":
    main()
