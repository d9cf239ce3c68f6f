"""The memoryview with_data() hands fn: one view object may be re-pointed at
each new buffer (pycompat.h, rl_view_repoint), so nothing fn can still see
may change under it.

fn keeps the view, a slice, a cast, a weak reference, or releases the view;
in each case what it kept must show the bytes it saw (or be released), and
the next call's view must show the next bytes, with a hash of its own.
Every test runs on every backend, on a small ring so buffers are reused.
(The poll backend hands fn a view of the connection's accumulator, a
bytearray: writable, so not hashable; the io_uring backend a read-only
view of the kernel's buffer.)
"""

from __future__ import annotations

import queue
import sys
import weakref

import pytest

from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")

MESSAGES = [b"%03d" % i + bytes([65 + i % 26]) * (40 + 37 * i % 700) for i in range(60)]


def _serve(fn_factory, backend):
    """Echo MESSAGES one at a time through a handler whose fn comes from
    fn_factory(conn, report); returns what fn reported, in order."""
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            report = []
            fn = fn_factory(conn, report)
            while await conn.with_data(fn):
                q.put(list(report))
                report.clear()
            q.put(None)

    out = []
    with launched(H, backend, ring_size=4, buffer_size=2048) as (sh, _):
        s = client(sh.address())
        for msg in MESSAGES:
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg
        s.close()
        while (item := get(q)) is not None:
            out.extend(item)
    return out


def test_each_view_shows_its_own_bytes_and_hash(backend):
    ids = []

    def factory(conn, report):
        def fn(view):
            # hash() of a read-only view is cached in the view: a re-pointed
            # view must not answer with the previous buffer's.
            ids.append(id(view))
            report.append((view.tobytes(), hash(view) if view.readonly else None,
                           len(view), view.nbytes, view.readonly, view.format,
                           view.ndim, view.shape, view.c_contiguous))
            conn.send_nowait(view)
            return len(view)
        return fn

    seen = _serve(factory, backend)
    stream = b"".join(MESSAGES)
    assert b"".join(r[0] for r in seen) == stream
    for data, h, n, nbytes, ro, fmt, ndim, shape, contig in seen:
        assert n == nbytes == len(data) and shape == (n,)
        assert fmt == "B" and ndim == 1 and contig
        if backend == "io_uring" and data:
            assert ro and h == hash(data)
    if backend == "io_uring" and (3, 11) <= sys.version_info[:2] <= (3, 14):
        # fn keeps nothing here: the view object is re-pointed, not remade.
        assert len(set(ids)) < len(ids) // 2


def test_what_fn_keeps_stays_what_it_saw(backend):
    kept = []

    def factory(conn, report):
        def fn(view):
            i = len(kept)
            data = view.tobytes()
            kind = i % 5
            if kind == 0:
                thing = view                    # released after fn
            elif kind == 1:
                thing = view[1:]                # a slice: its buffer stays out of the ring
            elif kind == 2:
                thing = view.cast("c")          # another view of the same buffer
            elif kind == 3:
                thing = weakref.ref(view)       # dead once fn's view is gone
            else:
                view.release()                  # released by fn itself
                thing = view
            kept.append((kind, data, thing))
            conn.send_nowait(data)
            return len(data)
        return fn

    _serve(factory, backend)
    assert len(kept) >= len(MESSAGES)
    for kind, data, thing in kept:
        if not data:
            continue                            # fn's call at EOF
        if kind in (0, 4):
            with pytest.raises(ValueError):
                len(thing)                      # "operation forbidden on released memoryview"
        elif kind == 1:
            assert bytes(thing) == data[1:]
        elif kind == 2:
            assert b"".join(thing.tolist()) == data
        else:
            assert thing() is None
    del kept[:]


def test_view_handed_to_forward_recv_buf(backend):
    # forward_recv_buf() reads the view's exporter (view.obj): a re-pointed
    # view must name the buffer it shows now.
    def factory(conn, report):
        def fn(view):
            report.append(type(view.obj).__name__)
            conn.forward_recv_buf(view)
            return len(view)
        return fn

    names = _serve(factory, backend)
    assert names
    if backend == "io_uring":
        assert all(n == "KBuf" for n in names)


def test_forward_recv_buf_of_a_released_or_foreign_view(backend):
    # forward_recv_buf() reads view.obj from the view itself where CPython's
    # layout is known (pycompat.h, rl_view_obj): a released view still
    # raises ValueError as the attribute does, and a view of something else
    # is copied; the connection goes on either way.
    def factory(conn, report):
        def fn(view):
            other = memoryview(view)
            other.release()
            try:
                conn.forward_recv_buf(other)
            except ValueError as exc:
                report.append("released" in str(exc))
            n = len(view)
            conn.forward_recv_buf(memoryview(bytes(view[:n // 2])))    # copied
            conn.forward_recv_buf(view[n // 2:])                       # a slice: held
            return n
        return fn

    out = _serve(factory, backend)      # (a message may come in pieces)
    assert len(out) >= len(MESSAGES) and all(out)
