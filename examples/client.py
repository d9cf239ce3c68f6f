"""A client on the runtime API: on_start + connect, in a client-only launch.

    python examples/echo_with_data.py --port 7000 &
    python examples/client.py --port 7000 --conns 8 --requests 1000

Each worker's on_start is its entry point (a task); with no bind() the
worker ends when on_start returns.  Every connection is a ConnCtx owned by
the task that connected it; asyncio.gather runs them side by side.
"""

import argparse
import asyncio
import time

import ringline

ARGS = None


class Client(ringline.Handler):
    @classmethod
    def create_for_worker(cls, worker_id):
        h = cls()
        h.worker_id = worker_id
        return h

    async def on_start(self):
        t0 = time.perf_counter()
        done = await asyncio.gather(*(self.one() for _ in range(ARGS.conns)))
        dt = time.perf_counter() - t0
        print(f"worker {self.worker_id}: {sum(done)} requests in {dt:.2f}s "
              f"({sum(done) / dt:,.0f}/s)")

    async def one(self):
        conn = await ringline.connect((ARGS.host, ARGS.port), timeout=5)
        payload = b"x" * ARGS.size
        async with conn:
            for _ in range(ARGS.requests):
                conn.send_nowait(payload)
                got = 0

                def take(view):
                    nonlocal got
                    got += len(view)
                    return len(view)

                while got < len(payload):
                    if not await conn.with_data(take):
                        raise ConnectionError("server closed the connection")
        return ARGS.requests


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=1)
    ARGS = ap.parse_args()
    shutdown, workers = ringline.Builder(ringline.Config(workers=ARGS.workers)).launch(Client)
    shutdown.join()
    for w in workers:
        w.raise_for_error()


if __name__ == "__main__":
    main()
