"""Backend selection when io_uring is refused, under a real seccomp filter.

The child process installs a seccomp BPF filter that makes io_uring_setup
(and io_uring_enter/io_uring_register) fail with EPERM -- what Docker's and
many sandboxes' default profiles do -- and only then imports ringline.  It
must fall back to the poll backend, say why in one line on the "ringline"
logger, refuse an explicit request for io_uring with the reason, and still
run an echo round trip over sock_* on the default loop.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ringline_only

# Native syscall numbers and the AUDIT_ARCH the filter must check first
# (seccomp_data.nr only means something for the arch it belongs to).
_ARCHES = {
    # machine: (AUDIT_ARCH_*, io_uring_setup, io_uring_enter, io_uring_register)
    "x86_64": (0xC000003E, 425, 426, 427),
    "aarch64": (0xC00000B7, 425, 426, 427),
}

CHILD = textwrap.dedent(r"""
    import ctypes, errno, json, logging, os, sys

    AUDIT_ARCH, NR_SETUP, NR_ENTER, NR_REGISTER = ARCH_PARAMS

    PR_SET_NO_NEW_PRIVS = 38
    PR_SET_SECCOMP = 22
    SECCOMP_MODE_FILTER = 2
    SECCOMP_RET_ALLOW = 0x7FFF0000
    SECCOMP_RET_ERRNO = 0x00050000
    BPF_LD_W_ABS = 0x20      # BPF_LD | BPF_W | BPF_ABS
    BPF_JEQ_K = 0x15         # BPF_JMP | BPF_JEQ | BPF_K
    BPF_RET_K = 0x06         # BPF_RET | BPF_K
    OFF_NR, OFF_ARCH = 0, 4  # struct seccomp_data { int nr; __u32 arch; ... }

    class sock_filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class sock_fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(sock_filter))]

    prog = [
        (BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ_K, 0, 4, AUDIT_ARCH),          # foreign arch: allow (-> 6)
        (BPF_LD_W_ABS, 0, 0, OFF_NR),
        (BPF_JEQ_K, 3, 0, NR_SETUP),            # -> 7
        (BPF_JEQ_K, 2, 0, NR_ENTER),            # -> 7
        (BPF_JEQ_K, 1, 0, NR_REGISTER),         # -> 7
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    insns = (sock_filter * len(prog))(*[sock_filter(*i) for i in prog])
    fprog = sock_fprog(len(prog), insns)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        print(json.dumps({"skip": "PR_SET_NO_NEW_PRIVS: " + os.strerror(ctypes.get_errno())}))
        sys.exit(0)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                  ctypes.c_void_p(ctypes.addressof(fprog)), 0, 0) != 0:
        print(json.dumps({"skip": "seccomp filter refused: " + os.strerror(ctypes.get_errno())}))
        sys.exit(0)

    # The filter works: a raw io_uring_setup now fails with EPERM.
    params = ctypes.create_string_buffer(120)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(NR_SETUP), ctypes.c_uint(4), params)
    out = {"raw_setup": r, "raw_errno": ctypes.get_errno() if r < 0 else 0}
    if r >= 0:
        os.close(r)

    records = []
    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("ringline").addHandler(Collect())

    os.environ.pop("RINGLINE_BACKEND", None)
    import asyncio, socket
    import ringline

    out["backend"] = ringline.backend()
    out["available"] = list(ringline.available_backends())

    try:
        ringline.new_event_loop(backend="io_uring").close()
        out["explicit"] = None
    except Exception as exc:
        out["explicit"] = [type(exc).__name__, str(exc)]
    os.environ["RINGLINE_BACKEND"] = "io_uring"
    try:
        ringline.new_event_loop().close()
        out["explicit_env"] = None
    except Exception as exc:
        out["explicit_env"] = [type(exc).__name__, str(exc)]
    del os.environ["RINGLINE_BACKEND"]

    async def echo():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)

        async def serve():
            conn, _ = await loop.sock_accept(lsock)
            with conn:
                while True:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:
                        break
                    await loop.sock_sendall(conn, data)

        server = asyncio.ensure_future(serve())
        payload = os.urandom(300_000)
        with socket.socket() as c:
            c.setblocking(False)
            await loop.sock_connect(c, lsock.getsockname())
            sender = asyncio.ensure_future(loop.sock_sendall(c, payload))
            got = bytearray()
            while len(got) < len(payload):
                chunk = await loop.sock_recv(c, 65536)
                if not chunk:
                    break
                got += chunk
            await sender
            c.shutdown(socket.SHUT_WR)
            await server
        lsock.close()
        return loop.backend, bytes(got) == payload, len(got)

    out["echo"] = ringline.run(echo())
    out["warnings"] = records
    print(json.dumps(out))
""")


def _arch_params():
    if sys.platform != "linux":
        pytest.skip("seccomp and io_uring are Linux-only")
    params = _ARCHES.get(platform.machine())
    if params is None:
        pytest.skip(f"no syscall table for {platform.machine()}")
    return params


def _run_child(code: str, timeout: float = 60.0) -> dict:
    env = dict(os.environ)
    env.pop("RINGLINE_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, (proc.stdout, proc.stderr)
    return json.loads(lines[-1])


def _sysctl_io_uring_disabled() -> str:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip()
    except OSError:
        return "0"


def test_seccomp_eperm_falls_back_to_poll():
    params = _arch_params()
    out = _run_child(f"ARCH_PARAMS = {params!r}\n" + CHILD)
    if "skip" in out:
        pytest.skip(out["skip"])

    # The filter is real: io_uring_setup itself is refused with EPERM.
    assert out["raw_setup"] == -1 and out["raw_errno"] == 1, out

    assert out["backend"] == "poll"
    assert out["available"] == ["poll"]

    # One line on the "ringline" logger, naming the cause.
    assert len(out["warnings"]) == 1, out["warnings"]
    line = out["warnings"][0]
    assert "EPERM" in line and "poll" in line, line
    if _sysctl_io_uring_disabled() == "0":
        assert "seccomp" in line, line

    # Asking for io_uring explicitly is an error that says why.
    for key in ("explicit", "explicit_env"):
        assert out[key] is not None, f"{key}: io_uring was granted under the filter"
        exc_type, message = out[key]
        assert exc_type == "RuntimeError", out[key]
        assert "io_uring" in message and "EPERM" in message, message

    # The default loop works: echo over sock_* on the poll backend.
    backend, same, n = out["echo"]
    assert backend == "poll"
    assert same and n == 300_000


INFO_CHILD = textwrap.dedent(r"""
    import subprocess, sys, json
    # The filter installed above is inherited by the child process.
    p = subprocess.run([sys.executable, "-m", "ringline", "info", "--json"],
                       capture_output=True, text=True)
    print(json.dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr}))
""")


def test_info_under_seccomp_reports_why():
    params = _arch_params()
    # Reuse the filter-installing prologue of CHILD (up to the raw check).
    prologue = CHILD.split("# The filter works:")[0]
    out = _run_child(f"ARCH_PARAMS = {params!r}\n" + prologue + INFO_CHILD)
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["rc"] == 0, out
    info = json.loads(out["out"])
    assert info["io_uring"]["usable"] is False
    assert "EPERM" in info["io_uring"]["reason"]
    assert info["backend"] == "poll"
    assert info["backends_available"] == ["poll"]
    assert "unavailable" not in out["err"], "info should not log the fallback warning"


def test_env_selects_poll():
    code = textwrap.dedent("""
        import json, logging, os, asyncio
        records = []
        class H(logging.Handler):
            def emit(self, r): records.append(r.getMessage())
        logging.getLogger("ringline").addHandler(H())
        import ringline
        loop = ringline.new_event_loop()
        explicit = ringline.new_event_loop(backend="poll")
        print(json.dumps({"default": ringline.backend(), "loop": loop.backend,
                          "explicit": explicit.backend, "warnings": records,
                          "stats": loop.stats().get("backend")}))
        loop.close(); explicit.close()
    """)
    env = dict(os.environ, RINGLINE_BACKEND="poll")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"default": "poll", "loop": "poll", "explicit": "poll",
                   "warnings": [], "stats": "poll"}


def test_info_command():
    proc = subprocess.run([sys.executable, "-m", "ringline", "info"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "kernel:" in text and platform.release() in text
    assert "io_uring:" in text
    assert "backend chosen:" in text
    import ringline
    usable = "io_uring" in ringline.available_backends()
    if usable:
        assert "io_uring: usable" in text and "RECV" in text  # opcodes listed
    else:
        assert "io_uring: not usable:" in text


def test_pollers_compiled():
    # epoll on Linux; kqueue only on macOS/BSD or a libkqueue build, where
    # it is otherwise compiled against ENOSYS stubs (kq.h) and inert.
    import errno

    import ringline
    from ringline import _backend
    from ringline._core import core

    pollers = core.pollers()
    if sys.platform.startswith("linux"):
        assert pollers[0] == "epoll"
    assert _backend.poller() == pollers[0]
    if "kqueue" not in pollers:
        with pytest.raises(OSError) as exc:
            core.KqueueDriver(None)
        assert exc.value.errno == errno.ENOSYS
    if "poll" in ringline.available_backends():
        loop = ringline.new_event_loop(backend="poll")
        try:
            assert loop.stats()["mechanism"] == pollers[0]
        finally:
            loop.close()


def test_poller_env(monkeypatch):
    import ringline
    from ringline._core import core

    monkeypatch.setenv("RINGLINE_POLLER", "select")
    with pytest.raises(ValueError, match="unknown RINGLINE_POLLER"):
        ringline.new_event_loop(backend="poll")
    for name in ("epoll", "kqueue"):
        monkeypatch.setenv("RINGLINE_POLLER", name)
        if name in core.pollers():
            loop = ringline.new_event_loop(backend="poll")
            try:
                assert loop.stats()["mechanism"] == name
            finally:
                loop.close()
        else:
            with pytest.raises(RuntimeError, match=f"the {name} poller is not compiled"):
                ringline.new_event_loop(backend="poll")
