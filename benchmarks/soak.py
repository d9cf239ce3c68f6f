#!/usr/bin/env python3
"""A fault-injecting soak of ringline's event loop (issue 14).

One server process (an asyncio-protocol echo server on a ringline loop, a
TLS echo server on a second port, a control port) runs with a low
RLIMIT_NOFILE, so bursts of connections hit EMFILE, and on io_uring with a
provided-buffer ring of 2 x 256 bytes, so ENOBUFS and the single-shot
fallback happen all the time.  Client processes, for as long as asked:

  plain sockets (threads)   echo clients checking every echoed byte (a
                            SHA-256 per connection); half-closes with a slow
                            reader (MBs the server must hold back with flow
                            control); peers that reset mid-message
                            (SO_LINGER 0); clients that connect and vanish;
                            TLS echo clients; TLS clients that send garbage
                            (before or after the handshake); bursts of more
                            connections than the server has fds.
  ringline (asyncio tasks)  echo over loop.sock_sendall / loop.sock_recv
                            with either cancelled at random moments: every
                            byte must still arrive once, in order.

The parent samples the server's RSS and fd count from /proc, and at the end
asks it (control port) for what is left: tasks, live transports, ops in
flight, ring buffers not back in the ring.  One line per backend:

    soak io_uring: 60 s, 5210 connections served, 412.3 MiB checked, 6120 faults
    injected (...), peak RSS 48.1 MiB, fds 14 -> 14, left: 0 tasks 0 transports
    0 ops; OK

Exit status 1 on any failure (a byte wrong, a stall, a leak, a crash).

    python benchmarks/soak.py --seconds 60 --backend both
    python benchmarks/soak.py --seconds 3600 --backend io_uring   # as long as you like
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import json
import os
import random
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:
    import ringline  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import ringline  # noqa: F401

HOST = "127.0.0.1"
LINGER0 = struct.pack("ii", 1, 0)


# =========================================================================
# server (a subprocess)
# =========================================================================

def proc_stats(pid="self"):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def serve(args) -> int:
    from ringline._core import core

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.nofile, hard), hard))
    if args.ring:
        entries, size = (int(x) for x in args.ring.split("x"))
        core.set_recv_buffers(entries, size)
    loop = ringline.new_event_loop(args.backend)
    asyncio.set_event_loop(loop)
    counts = {"conns": 0, "tls_conns": 0, "bytes": 0, "emfile": 0, "conn_errors": 0,
              "paused_writing": 0}
    unexpected = []
    live = set()

    def handler(loop, ctx):
        exc = ctx.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            counts["emfile"] += 1
        elif isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)) or (
                isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET,
                                                            errno.ETIMEDOUT)):
            counts["conn_errors"] += 1
        else:
            if len(unexpected) < 20:
                unexpected.append(f"{ctx.get('message')}: {exc!r}")

    loop.set_exception_handler(handler)

    class Echo(asyncio.Protocol):
        tls = False

        def connection_made(self, transport):
            self.t = transport
            live.add(transport)
            counts["tls_conns" if self.tls else "conns"] += 1

        def data_received(self, data):
            counts["bytes"] += len(data)
            self.t.write(data)

        def pause_writing(self):            # a slow reader: stop reading from it
            counts["paused_writing"] += 1
            self.t.pause_reading()

        def resume_writing(self):
            if not self.t.is_closing():
                self.t.resume_reading()

        def eof_received(self):
            return False                    # close once what is queued is sent

        def connection_lost(self, exc):
            live.discard(self.t)

    class TlsEcho(Echo):
        tls = True

    done = loop.create_future()

    class Control(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = b""

        def data_received(self, data):
            self.buf += data
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line == b"stats":
                    self.t.write(json.dumps(report()).encode() + b"\n")
                elif line == b"quit":
                    loop.create_task(quit(self.t))

    def report():
        rss, fds = proc_stats()
        st = loop.stats()
        ring = core._fuzz_pbuf_status(loop)
        mine = (asyncio.current_task(loop), main_task[0])
        return {"rss_kb": rss, "fds": fds, "live": len(live), "counts": counts,
                "unexpected": unexpected, "inflight": st.get("inflight"),
                "tasks": [repr(t) for t in asyncio.all_tasks(loop) if t not in mine],
                "enobufs": st.get("recv_enobufs"),
                "ring": ring}

    async def quit(ctl):
        # Everything the clients opened is closed by now: what is left is a leak.
        before = report()
        for srv in servers:
            srv.close()
        for t in list(live):
            t.abort()
        for srv in servers:
            await srv.wait_closed()
        await asyncio.sleep(0.2)
        after = report()
        ctl.write(json.dumps({"before": before, "after": after}).encode() + b"\n")
        await asyncio.sleep(0.05)
        ctl.close()
        done.set_result(None)

    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(args.cert, args.key)

    servers = []
    main_task = [None]

    async def main():
        main_task[0] = asyncio.current_task()
        s1 = await loop.create_server(Echo, HOST, 0, backlog=512)
        s2 = await loop.create_server(TlsEcho, HOST, 0, ssl=sctx, backlog=512,
                                      ssl_handshake_timeout=20)
        s3 = await loop.create_server(Control, HOST, 0)
        servers.extend((s1, s2, s3))
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        await asyncio.sleep(0.1)
        print(json.dumps({"ports": ports, "baseline": report(), "pid": os.getpid(),
                          "backend": loop.backend}), flush=True)
        await done

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


# =========================================================================
# clients
# =========================================================================

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.failures = []

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)


def recv_exactly(s, n):
    out = bytearray()
    while len(out) < n:
        d = s.recv(min(n - len(out), 262144))
        if not d:
            raise ConnectionError(f"EOF after {len(out)} of {n} echoed bytes")
        out += d
    return bytes(out)


def msg_size(rnd):
    return rnd.choice((1, rnd.randint(1, 64), rnd.randint(1, 1500), rnd.randint(1, 16384),
                       rnd.randint(16384, 200000)))


def c_echo(rnd, t, ports, tls_ctx):
    tls = tls_ctx is not None and rnd.random() < 0.3
    s = socket.create_connection((HOST, ports[1] if tls else ports[0]), timeout=60)
    try:
        if tls:
            s = tls_ctx.wrap_socket(s, server_hostname="localhost")
        hs, hr = hashlib.sha256(), hashlib.sha256()
        total = 0
        for _ in range(rnd.randint(1, 12)):
            m = rnd.randbytes(msg_size(rnd))
            s.sendall(m)
            hs.update(m)
            hr.update(recv_exactly(s, len(m)))
            total += len(m)
        if hs.digest() != hr.digest():
            t.fail(f"echo{' (TLS)' if tls else ''}: {total} bytes echoed wrong")
        t.add("bytes_checked", total)
        t.add("tls_echo" if tls else "echo")
    finally:
        s.close()


def c_halfclose_slow(rnd, t, ports, tls_ctx):
    """Send MBs, half-close, read the echo back slowly: the server must hold
    back (pause reading while its writes wait) and flush before closing."""
    s = socket.create_connection((HOST, ports[0]), timeout=60)
    n = rnd.randint(200_000, 3_000_000)
    data = rnd.randbytes(n)
    err = []

    def send():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            err.append(exc)

    th = threading.Thread(target=send)
    th.start()
    h = hashlib.sha256()
    got = 0
    try:
        while True:
            d = s.recv(rnd.choice((512, 4096, 65536)))
            if not d:
                break
            h.update(d)
            got += len(d)
            if rnd.random() < 0.05:
                time.sleep(0.002)
        th.join()
        if err or got != n or h.digest() != hashlib.sha256(data).digest():
            t.fail(f"half-close: {got} of {n} bytes back, digest "
                   f"{'ok' if h.digest() == hashlib.sha256(data).digest() else 'WRONG'}, {err}")
        t.add("bytes_checked", n)
        t.add("halfclose_slow")
        t.add("faults")
    finally:
        th.join()
        s.close()


def c_reset(rnd, t, ports, tls_ctx):
    """A peer that resets mid-message (SO_LINGER 0), sometimes while the
    server still has echo to send it."""
    s = socket.create_connection((HOST, ports[rnd.random() < 0.2]), timeout=60)
    try:
        s.sendall(rnd.randbytes(rnd.choice((1, 1000, 100_000, 1_000_000))))
        if rnd.random() < 0.5:
            time.sleep(rnd.random() * 0.01)
    except OSError:
        pass
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    s.close()
    t.add("reset")
    t.add("faults")


def c_vanish(rnd, t, ports, tls_ctx):
    s = socket.create_connection((HOST, ports[rnd.random() < 0.3]), timeout=60)
    r = rnd.random()
    if r < 0.3:
        time.sleep(rnd.random() * 0.2)
    elif r < 0.5:
        s.shutdown(socket.SHUT_RDWR)
    s.close()
    t.add("vanish")
    t.add("faults")


def c_tls_garbage(rnd, t, ports, tls_ctx):
    s = socket.create_connection((HOST, ports[1]), timeout=30)
    try:
        if tls_ctx is not None and rnd.random() < 0.5:
            # A good handshake, then bytes that are no TLS record.
            ts = tls_ctx.wrap_socket(s, server_hostname="localhost")
            ts.sendall(b"hello")
            recv_exactly(ts, 5)
            raw = socket.socket(fileno=ts.detach())
            s = raw
        s.sendall(rnd.randbytes(rnd.choice((1, 5, 300, 20000))))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):                  # the server must close it
            pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        s.close()
    t.add("tls_garbage")
    t.add("faults")


_burst_lock = threading.Lock()


def c_emfile_burst(rnd, t, ports, tls_ctx, nofile=64):
    """More connections at once than the server has fds for."""
    if not _burst_lock.acquire(blocking=False):
        return
    socks = []
    try:
        for _ in range(nofile + 40):
            try:
                s = socket.create_connection((HOST, ports[0]), timeout=5)
            except OSError:
                break
            socks.append(s)
            try:
                s.send(b"x")
            except OSError:
                pass
        time.sleep(0.3 + rnd.random())
        t.add("emfile_burst")
        t.add("faults")
    finally:
        for s in socks:
            if rnd.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            s.close()
        _burst_lock.release()


SCENARIOS = ((c_echo, 40), (c_halfclose_slow, 6), (c_reset, 14), (c_vanish, 14),
             (c_tls_garbage, 8), (c_emfile_burst, 1))


def plain_client(args) -> int:
    ports = json.loads(args.ports)
    t = Tally()
    tls_ctx = None
    if args.cert:
        tls_ctx = ssl.create_default_context(cafile=args.cert)
    deadline = time.monotonic() + args.seconds
    funcs = [f for f, w in SCENARIOS for _ in range(w)]

    def worker(i):
        rnd = random.Random(args.seed * 1000 + i)
        while time.monotonic() < deadline:
            f = rnd.choice(funcs)
            try:
                if f is c_emfile_burst:
                    f(rnd, t, ports, tls_ctx, args.nofile)
                else:
                    f(rnd, t, ports, tls_ctx)
            except (ConnectionError, ssl.SSLError) as exc:
                # Only the fault scenarios may see the connection go.
                if f in (c_echo, c_halfclose_slow):
                    t.fail(f"{f.__name__}: {exc!r}")
            except OSError as exc:
                t.fail(f"{f.__name__}: {exc!r}")     # timeouts: a stall
            except Exception as exc:                 # noqa: BLE001
                t.fail(f"{f.__name__}: {exc!r}")

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    print(json.dumps({"counts": t.c, "failures": t.failures}), flush=True)
    return 0


def ringline_client(args) -> int:
    """Echo over loop.sock_sendall / sock_recv on a ringline loop, either
    cancelled at random moments."""
    ports = json.loads(args.ports)
    t = Tally()
    loop = ringline.new_event_loop(args.backend)
    deadline = time.monotonic() + args.seconds

    async def one(rnd):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, ports[0])), 60)
            confirmed = bytearray()   # sent, sock_sendall returned
            attempted = bytearray()   # ... plus a chunk whose sock_sendall was cancelled
            got = bytearray()
            uncertain = False
            for _ in range(rnd.randint(1, 10)):
                m = rnd.randbytes(msg_size(rnd))
                st = loop.create_task(loop.sock_sendall(sock, m))
                if rnd.random() < 0.15:
                    # A few loop iterations in: a large send is mid-way.
                    for _ in range(rnd.randint(0, 3)):
                        await asyncio.sleep(0)
                    st.cancel()
                try:
                    await st
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling():
                        raise
                    t.add("cancel_sendall")
                    t.add("faults")
                    attempted += m
                    uncertain = True
                    break
                confirmed += m
                attempted += m
                while len(got) < len(confirmed):
                    rt = loop.create_task(loop.sock_recv(sock, min(len(confirmed) - len(got), 65536)))
                    if rnd.random() < 0.3:
                        for _ in range(rnd.randint(0, 2)):
                            await asyncio.sleep(0)
                        rt.cancel()
                    try:
                        d = await asyncio.wait_for(rt, 60)
                    except asyncio.CancelledError:
                        if asyncio.current_task().cancelling():
                            raise
                        t.add("cancel_recv")
                        t.add("faults")
                        continue
                    if not d:
                        raise ConnectionError(f"EOF after {len(got)} of {len(confirmed)} bytes")
                    got += d
            if uncertain:
                # How much of the cancelled chunk went out is unknown: read
                # to the end; what came back must be a prefix of what was
                # attempted, at least all that was confirmed.
                sock.shutdown(socket.SHUT_WR)
                while True:
                    d = await asyncio.wait_for(loop.sock_recv(sock, 262144), 60)
                    if not d:
                        break
                    got += d
                if not (len(confirmed) <= len(got) <= len(attempted)
                        and got == attempted[:len(got)]):
                    t.fail(f"ringline client: {len(got)} bytes back after a cancelled "
                           f"sendall ({len(confirmed)} confirmed, {len(attempted)} attempted), "
                           f"{'prefix ok' if got == attempted[:len(got)] else 'WRONG BYTES'}")
            elif got != confirmed:
                t.fail(f"ringline client: {len(got)} bytes echoed wrong")
            t.add("bytes_checked", len(got))
            t.add("ringline_echo")
        finally:
            sock.close()

    async def worker(i):
        rnd = random.Random(args.seed * 1000 + 500 + i)
        while time.monotonic() < deadline:
            try:
                await one(rnd)
            except Exception as exc:                 # noqa: BLE001
                t.fail(f"ringline client: {exc!r}")

    async def main():
        await asyncio.gather(*(worker(i) for i in range(args.threads)))
        await asyncio.sleep(0.1)
        left = [repr(x) for x in asyncio.all_tasks() if x is not asyncio.current_task()]
        if left:
            t.fail(f"ringline client: tasks left {left[:3]}")

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    print(json.dumps({"counts": t.c, "failures": t.failures}), flush=True)
    return 0


# =========================================================================
# the parent
# =========================================================================

def make_cert():
    d = tempfile.mkdtemp(prefix="rl-soak-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if shutil.which("openssl"):
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", key, "-out", cert], capture_output=True)
        if r.returncode == 0:
            return cert, key
    raise SystemExit("soak: the openssl command is needed to make a TLS certificate")


def ctl(port, line, timeout=30):
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
    return json.loads(buf)


def soak_one(backend, args, cert, key) -> bool:
    me = [sys.executable, os.path.abspath(__file__)]
    env = dict(os.environ)
    if not _installed():
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.join(ROOT, "src"), env.get("PYTHONPATH")) if p)
    server = subprocess.Popen(me + ["--serve", "--backend", backend, "--nofile", str(args.nofile),
                                    "--ring", args.ring, "--cert", cert, "--key", key],
                              stdout=subprocess.PIPE, env=env, text=True)
    hello = json.loads(server.stdout.readline() or "null") if server.stdout else None
    if not hello:
        print(f"soak {backend}: the server did not start (exit {server.wait()})")
        return False
    ports, base, pid = hello["ports"], hello["baseline"], hello["pid"]
    t0 = time.monotonic()
    common = ["--backend", backend, "--seconds", str(args.seconds), "--ports", json.dumps(ports),
              "--seed", str(args.seed), "--nofile", str(args.nofile), "--cert", cert]
    clients = [
        subprocess.Popen(me + ["--client", "plain", "--threads", str(args.threads)] + common,
                         stdout=subprocess.PIPE, env=env, text=True),
        subprocess.Popen(me + ["--client", "ringline", "--threads", str(args.ring_tasks)] + common,
                         stdout=subprocess.PIPE, env=env, text=True),
    ]
    samples = []
    failures = []
    while any(c.poll() is None for c in clients):
        if server.poll() is not None:
            failures.append(f"the server died (exit {server.returncode})")
            break
        try:
            samples.append((time.monotonic() - t0,) + proc_stats(pid))
        except OSError:
            pass
        if time.monotonic() - t0 > args.seconds + 180:
            failures.append("clients still running 180 s after the end: a stall")
            break
        time.sleep(0.5)
    results = []
    for c in clients:
        try:
            out, _ = c.communicate(timeout=30)
            results.append(json.loads(out.strip().splitlines()[-1]))
        except Exception as exc:                     # noqa: BLE001
            c.kill()
            failures.append(f"a client ended without a report ({exc!r}, exit {c.returncode})")
    counts = {}
    for r in results:
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
        failures += r["failures"]
    # Let the server finish what the clients left (resets, closes), then ask.
    time.sleep(1.0)
    final = None
    if server.poll() is None:
        try:
            final = ctl(ports[2], "quit")
        except Exception as exc:                     # noqa: BLE001
            failures.append(f"no final report from the server: {exc!r}")
    try:
        rc = server.wait(timeout=30)
        if rc != 0:
            failures.append(f"server exit status {rc}")
    except subprocess.TimeoutExpired:
        server.kill()
        failures.append("the server did not exit after quit")
    peak_rss = max((s[1] for s in samples), default=0) / 1024
    if final:
        b, a = final["before"], final["after"]
        srv = b["counts"]
        if b["fds"] > base["fds"] + 1:         # + the control connection
            failures.append(f"fds: {base['fds']} at start, {b['fds']} at the end (a leak)")
        if b["live"] != 0:
            failures.append(f"{b['live']} transports still open after every client closed")
        if a["tasks"]:
            failures.append(f"tasks left: {a['tasks'][:3]}")
        if b["unexpected"]:
            failures.append(f"server exception handler: {b['unexpected'][:3]}")
        if b["inflight"] is not None and base["inflight"] is not None and \
                b["inflight"] > base["inflight"] + 2:
            failures.append(f"ops in flight: {base['inflight']} at start, {b['inflight']} at the end")
        ring = b["ring"]
        if ring is not None and (ring["in_kernel"] != ring["entries"] or ring["lent"]):
            failures.append(f"ring buffers not back in the ring at the end: {ring}")
        counts["served"] = srv["conns"] + srv["tls_conns"]
        counts["emfile"] = srv["emfile"]
        counts["server_conn_errors"] = srv["conn_errors"]
        counts["paused_writing"] = srv["paused_writing"]
        counts["enobufs"] = b.get("enobufs") or 0
    # RSS: the second half of the run may not outgrow the first.
    half = args.seconds / 2
    first = [s[1] for s in samples if min(5, half / 2) <= s[0] <= half] or [0]
    second = [s[1] for s in samples if s[0] > half] or [0]
    if max(second) > max(first) * 1.25 + 16 * 1024:
        failures.append(f"RSS grew: {max(first) / 1024:.1f} MiB in the first half, "
                        f"{max(second) / 1024:.1f} MiB in the second")
    if peak_rss > args.max_rss_mb:
        failures.append(f"peak RSS {peak_rss:.1f} MiB > {args.max_rss_mb} MiB")
    peak_fds = max((s[2] for s in samples), default=0)
    faults = counts.get("faults", 0)
    fault_detail = ", ".join(f"{k} {counts.get(k, 0)}" for k in (
        "reset", "vanish", "halfclose_slow", "tls_garbage", "cancel_sendall", "cancel_recv",
        "emfile_burst"))
    hits = f"; server hit EMFILE {counts.get('emfile', 0)}x"
    if backend == "io_uring":
        hits += f", ENOBUFS {counts.get('enobufs', 0)}x (ring {args.ring})"
    end_fds = final["before"]["fds"] if final else "?"
    left = (f"{len(final['after']['tasks'])} tasks {final['before']['live']} transports "
            f"{final['before']['inflight']} ops (start {base['inflight']})") if final else "?"
    print(f"soak {backend}: {args.seconds:.0f} s, {counts.get('served', 0)} connections served, "
          f"{counts.get('bytes_checked', 0) / 2**20:.1f} MiB checked, {faults} faults injected "
          f"({fault_detail}{hits}), peak RSS {peak_rss:.1f} MiB, fds {base['fds']} -> {end_fds} "
          f"(peak {peak_fds}, limit {args.nofile}), left: {left}; "
          f"{'OK' if not failures else 'FAILED'}", flush=True)
    for f in failures[:20]:
        print(f"  FAILURE: {f}", flush=True)
    return not failures


def _installed():
    return not os.path.abspath(ringline.__file__).startswith(os.path.join(ROOT, "src"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="per backend (default 60)")
    p.add_argument("--backend", default="both", help="io_uring, poll or both (default)")
    p.add_argument("--threads", type=int, default=10, help="plain-socket client threads")
    p.add_argument("--ring-tasks", type=int, default=6, help="ringline client tasks")
    p.add_argument("--nofile", type=int, default=64, help="the server's RLIMIT_NOFILE")
    p.add_argument("--ring", default="2x256", help="the server's provided-buffer ring, ENTRIESxSIZE")
    p.add_argument("--max-rss-mb", type=float, default=400)
    p.add_argument("--seed", type=int, default=None)
    # internal: the server and client processes
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if args.serve:
        return serve(args)
    if args.client == "plain":
        return plain_client(args)
    if args.client == "ringline":
        return ringline_client(args)
    backends = ringline.available_backends() if args.backend == "both" else [args.backend]
    if args.backend == "both" and "io_uring" not in backends:
        print("soak: io_uring is not available here; soaking the poll backend only")
    cert, key = make_cert()
    print(f"soak: seed {args.seed}, {args.seconds:.0f} s per backend, backends {', '.join(backends)}",
          flush=True)
    ok = True
    for b in backends:
        ok = soak_one(b, args, cert, key) and ok
    shutil.rmtree(os.path.dirname(cert), ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
