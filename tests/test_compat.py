"""The compatibility layer: no private CPython name outside ringline._compat,
and the version-dependent asyncio behaviour follows the running version.

The grep is over the package's source (.py, .pyx, .pxi, .pxd), comments and
strings left out.  Rules:
* ``from asyncio import X`` only for X in ``asyncio.__all__`` (public);
* no ``from asyncio.<module> import``, ``import asyncio.<module>`` or
  ``asyncio.<module>.<name>``: asyncio's submodules are private;
* none of the private names _compat.py takes from asyncio's modules.
Private *attributes of asyncio objects* that compiled fast paths use are
listed in ``_compat.OBJECT_INTERNALS`` and checked to exist here.
"""

from __future__ import annotations

import asyncio
import io
import pathlib
import re
import subprocess
import sys
import tokenize

import pytest

import _loops
from _helpers import recorder

PKG = pathlib.Path(__file__).resolve().parent.parent / "src" / "ringline"
COMPAT_FILES = {"_compat.py"}

pytestmark = pytest.mark.ringline_only


def _code_of_py(text: str) -> str:
    """Python source without comments and string literals."""
    out = []
    toks = tokenize.generate_tokens(io.StringIO(text).readline)
    for tok in toks:
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            continue
        if sys.version_info >= (3, 12) and tok.type in (
                tokenize.FSTRING_START, tokenize.FSTRING_MIDDLE, tokenize.FSTRING_END):
            continue
        out.append(tok.string)
        out.append("\n" if tok.type in (tokenize.NEWLINE, tokenize.NL) else " ")
    return "".join(out)


def _code_of_cython(text: str) -> str:
    text = re.sub(r'"""(?:.|\n)*?"""', '""', text)
    text = re.sub(r"'''(?:.|\n)*?'''", "''", text)
    text = re.sub(r"(?m)#.*$", "", text)
    text = re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", text)
    return text


def _sources():
    for path in sorted(PKG.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxi", ".pxd") or path.name in COMPAT_FILES:
            continue
        text = path.read_text()
        code = _code_of_py(text) if path.suffix == ".py" else _code_of_cython(text)
        yield path.relative_to(PKG), code


def _private_names_in_compat() -> set:
    text = (PKG / "_compat.py").read_text()
    names = set(re.findall(r"\b(?:base_events|base_subprocess|constants|coroutines|events|"
                           r"format_helpers|futures|log|selector_events|sslproto|streams|"
                           r"transports|trsock|unix_events|_Unix|_Sel)\s*\.\s*(_[A-Za-z]\w*)",
                           text))
    names |= set(re.findall(r"\bloop\.(_[a-z]\w*)", text)) & {
        "_unix_server_sockets", "_old_agen_hooks"}
    names |= {"_attach", "_detach", "_child_created", "_watcher"}
    names.discard("_do_read")           # also SSLCore's own attribute name
    return names


def _loop_method_names() -> set:
    """Private names that are the loop's own methods: BaseEventLoop's hooks
    EventLoop implements, and the selector-loop methods it inherits through
    _compat.SelectorLoopMethods (calling self._x calls ringline's loop)."""
    from ringline import _compat
    return set(_compat.LOOP_HOOKS) | {n for n in vars(_compat.SelectorLoopMethods)
                                      if not n.startswith("__")}


def test_loop_hooks_exist_upstream():
    import selectors
    from ringline import _compat
    ref = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        missing = [n for n in _loop_method_names() if not hasattr(ref, n)
                   and n not in ("_sock_sendfile_readiness",)]
    finally:
        ref.close()
    assert not missing
    assert _compat.SelectorLoopMethods._sock_sendfile_readiness is not None


def test_private_names_only_in_compat():
    public = set(asyncio.__all__)
    private = _private_names_in_compat() - _loop_method_names()
    assert {"_FlowControlMixin", "_set_running_loop", "_format_handle",
            "_event_loop_policy", "_watcher"} <= private
    problems = []
    for rel, code in _sources():
        for m in re.finditer(r"from\s+asyncio\s+import\s+(\([^)]*\)|[^\n]+)", code):
            for name in re.findall(r"\b(\w+)\b(?:\s+as\s+\w+)?", m.group(1)):
                if name != "as" and name not in public and not re.search(
                        rf"\bas\s+{name}\b", m.group(1)):
                    problems.append(f"{rel}: from asyncio import {name} (not in asyncio.__all__)")
        for m in re.finditer(r"from\s+asyncio\s*\.\s*\w+\s+import|import\s+asyncio\s*\.\s*\w+"
                             r"|\basyncio\s*\.\s*[a-z_]+\s*\.\s*\w+", code):
            problems.append(f"{rel}: {m.group(0)!r} (asyncio submodule)")
        for name in private:
            if re.search(rf"(?<![\w.]){re.escape(name)}\b|\.\s*{re.escape(name)}\b", code):
                problems.append(f"{rel}: private name {name}")
    assert not problems, "\n".join(problems)


def test_object_internals_exist_on_this_version():
    from ringline import _compat

    r = asyncio.StreamReader(loop=_compat._NoLoop())
    missing = [n for n in _compat.OBJECT_INTERNALS["StreamReader"] if not hasattr(r, n)]
    missing += [n for n in _compat.OBJECT_INTERNALS["SSLProtocol"]
                if n.startswith("_do_") and not hasattr(_compat.SSLProtocol, n)]
    if not _compat.PY314:
        policy = asyncio.DefaultEventLoopPolicy()
        missing += [n for n in _compat.OBJECT_INTERNALS["_UnixDefaultEventLoopPolicy"]
                    if not hasattr(policy, n)]
    assert not missing
    # The fast paths are on for every version the project tests.
    if _compat.tested():
        assert _compat.STREAM_READER_FAST and _compat.SSL_RECORD_PATH
        # 3.11-3.13 (the tested ones) have child watchers on the policy.
        assert _compat.POLICY_WATCHER_SHAPE


def test_info_prints_python_version():
    out = subprocess.run([sys.executable, "-m", "ringline", "info"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    ver = "%d.%d.%d" % sys.version_info[:3]
    assert re.search(rf"python\s*:?\s*{re.escape(ver)}", out, re.I), out
    assert "tested" in out.lower()


# ---- behaviour that changed between versions follows the running asyncio ----

@pytest.fixture(params=_loops.backends())
def factory(request):
    return _loops.loop_factory(request.param)


def test_asyncio_runner_with_loop_factory(factory):
    async def main():
        return type(asyncio.get_running_loop()).__name__
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) == "EventLoop"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory(factory):
    async def main():
        return type(asyncio.get_running_loop()).__name__
    assert asyncio.run(main(), loop_factory=factory) == "EventLoop"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_factory(factory):
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        steps = []

        async def child():
            steps.append("child ran")
            await asyncio.sleep(0)
            return 7

        t = asyncio.create_task(child())
        steps.append("after create_task")      # eager: the child ran first
        async with asyncio.TaskGroup() as tg:
            t2 = tg.create_task(child())
        return steps, await t, t2.result()

    with asyncio.Runner(loop_factory=factory) as runner:
        steps, a, b = runner.run(main())
    assert steps[:2] == ["child ran", "after create_task"] and (a, b) == (7, 7)


async def _server_with_clients(n):
    loop = asyncio.get_running_loop()
    made = []

    class P(asyncio.Protocol):
        def connection_made(self, tr):
            made.append(tr)

        def connection_lost(self, exc):
            self.lost = True

    srv = await loop.create_server(P, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    while len(made) < n:
        await asyncio.sleep(0.01)
    return srv, made, clients


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Server.close_clients is 3.13+")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_server_close_and_abort_clients(factory, how):
    async def main():
        srv, made, clients = await _server_with_clients(3)
        srv.close()
        getattr(srv, how)()
        assert all(t.is_closing() for t in made)
        await asyncio.wait_for(srv.wait_closed(), 5)
        for r, w in clients:
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
        return True
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ wait_closed waits for clients")
def test_server_wait_closed_waits_for_connections(factory):
    async def main():
        srv, made, clients = await _server_with_clients(2)
        srv.close()
        waiter = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()            # connections still open
        for t in made:
            t.close()
        await asyncio.wait_for(waiter, 5)
        for _, w in clients:
            w.close()
        return True
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is 3.13+")
def test_unix_server_unlinks_its_socket_file(factory, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        srv = await asyncio.get_running_loop().create_unix_server(asyncio.Protocol, path)
        assert pathlib.Path(path).exists()
        srv.close()
        await srv.wait_closed()
        return pathlib.Path(path).exists()
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) is False


# ---- transport methods: ringline's results against the running asyncio's ----

def _transport_observations(loop):
    """Call every public method of an open stream and datagram transport
    and record what each returns or raises."""
    import socket
    obs = {}
    attempt = recorder(obs, (bool, int, float, str, type(None), tuple))

    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        tr, _ = await loop.create_connection(asyncio.Protocol, *srv.sockets[0].getsockname())
        attempt("is_closing", tr.is_closing)
        attempt("is_reading", tr.is_reading)
        attempt("can_write_eof", tr.can_write_eof)
        attempt("get_write_buffer_limits", tr.get_write_buffer_limits)
        attempt("set_write_buffer_limits", lambda: tr.set_write_buffer_limits(1000, 100))
        attempt("limits_after_set", tr.get_write_buffer_limits)
        attempt("set_write_buffer_limits_bad", lambda: tr.set_write_buffer_limits(1, 100))
        attempt("set_write_buffer_limits_high", lambda: tr.set_write_buffer_limits(high=400))
        attempt("limits_high_only", tr.get_write_buffer_limits)
        attempt("write_str", lambda: tr.write("text"))
        attempt("write_int", lambda: tr.write(1))
        attempt("write_empty", lambda: tr.write(b""))
        attempt("writelines_empty", lambda: tr.writelines([]))
        attempt("writelines_bad", lambda: tr.writelines(["x"]))
        attempt("writelines_gen", lambda: tr.writelines(b for b in [b"a", b"b"]))
        attempt("pause_reading", tr.pause_reading)
        attempt("pause_reading_twice", tr.pause_reading)
        attempt("is_reading_paused", tr.is_reading)
        attempt("resume_reading", tr.resume_reading)
        attempt("resume_reading_twice", tr.resume_reading)
        attempt("get_protocol", lambda: isinstance(tr.get_protocol(), asyncio.Protocol))
        attempt("set_protocol", lambda: tr.set_protocol(tr.get_protocol()))
        attempt("extra_socket", lambda: type(tr.get_extra_info("socket")).__name__)
        attempt("extra_sockname", lambda: tr.get_extra_info("sockname") is not None)
        attempt("extra_peername", lambda: tr.get_extra_info("peername") is not None)
        attempt("extra_missing", lambda: tr.get_extra_info("nope", 5))
        attempt("is_transport", lambda: isinstance(tr, asyncio.Transport))
        attempt("write_eof", tr.write_eof)
        attempt("write_after_eof", lambda: tr.write(b"x"))
        attempt("writelines_after_eof", lambda: tr.writelines([b"x"]))
        attempt("write_eof_twice", tr.write_eof)
        tr.close()
        srv.close()
        await srv.wait_closed()

        dtr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                     local_addr=("127.0.0.1", 0))
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        attempt("d_is_closing", dtr.is_closing)
        attempt("d_limits", dtr.get_write_buffer_limits)
        attempt("d_buffer_size", dtr.get_write_buffer_size)
        attempt("d_sendto", lambda: dtr.sendto(b"x", peer.getsockname()))
        attempt("d_sendto_str", lambda: dtr.sendto("x", peer.getsockname()))
        attempt("d_sendto_empty", lambda: dtr.sendto(b"", peer.getsockname()))
        attempt("d_sendto_noaddr", lambda: dtr.sendto(b"x"))
        attempt("d_is_datagram", lambda: isinstance(dtr, asyncio.DatagramTransport))
        attempt("d_extra_peername", lambda: dtr.get_extra_info("peername"))
        dtr.close()
        attempt("d_sendto_closed", lambda: dtr.sendto(b"x", peer.getsockname()))
        peer.close()
        await asyncio.sleep(0.01)

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    return obs


def test_transport_methods_match_asyncio(factory):
    loop = factory()
    try:
        observed = _transport_observations(loop)
    finally:
        loop.close()
    ref_loop = asyncio.SelectorEventLoop()
    try:
        reference = _transport_observations(ref_loop)
    finally:
        ref_loop.close()
    if sys.version_info < (3, 12):
        # 3.11's _SelectorDatagramTransport does not derive from
        # asyncio.DatagramTransport (3.12 added the base); ringline's does.
        assert reference["d_is_datagram"] == ("returns", False)
        reference["d_is_datagram"] = ("returns", True)
    mismatches = {k: (observed.get(k), v) for k, v in reference.items() if observed.get(k) != v}
    assert not mismatches, f"(ringline, asyncio {sys.version.split()[0]}): {mismatches}"
