"""What CPython itself charges per message for a coroutine-per-connection
handler, against a callback (asyncio's Protocol.data_received), counted by
callgrind: no event loop, no I/O, no ringline.

    python benchmarks/resume_floor.py            # needs valgrind

Each style handles N messages of one 64-byte payload, the driver being the
same Python loop; the report is (I(N2) - I(N1)) / (N2 - N1) per style:

    callback     proto.data_received(data): one Python call per message
    coroutine    coro.send(data) resumes `while True: data = await next_read(); ...`,
                 next_read() (_common.py, the floor servers' too) being the
                 cheapest awaitable Python has (a types.coroutine
                 generator): one frame resumed, one
                 awaitable made and awaited per message
    coroutine+task  the same, with the task switch asyncio makes around every
                 step (asyncio.tasks._enter_task / _leave_task), so that
                 current_task() names the handler's task
    bytes, memoryview  a 64-byte bytes copy made and dropped per message (what
                 data_received gets), against a memoryview over the buffer
                 made, released and dropped (what with_data's fn gets)

The difference between "coroutine+task" and "callback" is the floor of what a
runtime handler that awaits each message pays over data_received, before
any runtime code runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

DATA = b"x" * 64


def run(style: str, n: int) -> None:
    if style == "callback":
        class Proto:
            __slots__ = ("got",)

            def data_received(self, data):
                self.got += len(data)

        p = Proto()
        p.got = 0
        cb = p.data_received
        for _ in range(n):
            cb(DATA)
    elif style in ("coroutine", "coroutine+task"):
        import asyncio
        from _common import next_read

        async def handler():
            got = 0
            while True:
                data = await next_read()
                got += len(data)

        coro = handler()
        coro.send(None)
        send = coro.send
        if style == "coroutine":
            for _ in range(n):
                send(DATA)
        else:
            from asyncio import tasks
            loop = asyncio.new_event_loop()
            task = loop.create_task(asyncio.sleep(0))
            enter, leave = tasks._enter_task, tasks._leave_task
            for _ in range(n):
                enter(loop, task)
                send(DATA)
                leave(loop, task)
            task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
    elif style == "bytes":
        buf = DATA * 4
        for _ in range(n):
            b = buf[:64]        # a new 64-byte bytes, as data_received gets
            del b
    elif style == "memoryview":
        buf = DATA * 4
        for _ in range(n):
            v = memoryview(buf)
            v.release()
            del v
    else:
        sys.exit(f"unknown style {style}")


def count(style: str, n: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", style, str(n)],
        capture_output=True, text=True)
    found = re.findall(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f"callgrind run failed ({style}):\n{out.stderr[-2000:]}")
    return int(found[-1])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        run(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n1", type=int, default=20000)
    ap.add_argument("--n2", type=int, default=120000)
    a = ap.parse_args()
    print(f"python {sys.version.split()[0]}: instructions per message")
    per = {}
    for style in ("callback", "coroutine", "coroutine+task", "bytes", "memoryview"):
        per[style] = (count(style, a.n2) - count(style, a.n1)) / (a.n2 - a.n1)
        print(f"  {style:15} {per[style]:8,.0f}", flush=True)
    print(f"  coroutine+task over callback: {per['coroutine+task'] - per['callback']:,.0f}")
    print(f"  memoryview over bytes:        {per['memoryview'] - per['bytes']:,.0f}")


if __name__ == "__main__":
    main()
