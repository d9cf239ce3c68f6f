"""Debug mode reports as asyncio's: source tracebacks that end at the caller,
slow-callback warnings, exception-handler reports, "Task was destroyed but
it is pending", "coroutine ... was never awaited".

Each check runs the same program on the loop under test and on asyncio's
selector loop (the running version's) and compares what a user sees.
Known, stated differences (the loop's own methods are compiled, so they have
no Python frames): a callback's traceback shows ringline's Handle.run frame
where asyncio shows events.py's Handle._run; a future from
loop.create_future() names its caller as the last frame, not create_future;
a coroutine's origin traceback lacks asyncio's _run_once/Handle._run frames
(its innermost frames, where it was created, are the same).
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import re
import sys
import time
import warnings

import pytest


def _frames(loop):
    loop.set_debug(True)

    def caller():
        return {"call_soon": loop.call_soon(print),
                "call_later": loop.call_later(10, print),
                "call_at": loop.call_at(loop.time() + 10, print),
                "call_soon_threadsafe": loop.call_soon_threadsafe(print),
                "TimerHandle": asyncio.TimerHandle(loop.time() + 10, print, (), loop)}
    out = {}
    for name, h in caller().items():
        out[name] = h._source_traceback[-1][2]
        h.cancel()

    async def coro():
        pass
    t = loop.create_task(coro())
    out["create_task"] = t._source_traceback[-1][2]
    loop.run_until_complete(t)
    return out


def _normalized(text):
    text = re.sub(r"0x[0-9a-f]+", "0x", text)
    text = re.sub(r"\d+\.\d+ seconds", "N seconds", text)
    text = re.sub(r"line \d+", "line N", text)
    text = re.sub(r"Task-\d+", "Task-N", text)
    # A traceback block: its last two frames, where the object was made (its
    # outer frames count the loop's own; asyncio's limit of 10 frames falls
    # elsewhere when some of those are compiled).
    text = re.sub(r"(created at \(most recent call last\):\n)((?:  File [^\n]*\n(?:    [^\n]*\n)*)+)",
                  lambda m: m.group(1) + "".join(re.findall(r"  File [^\n]*\n(?:    [^\n]*\n)*",
                                                            m.group(2))[-2:]), text)
    # The one frame that differs by design (see the module docstring).
    text = re.sub(r'  File "[^"]*(events\.py|handles\.pxi)", line N, in [^\n]*\n'
                  r'(    [^\n]*\n)*', "  File <Handle run>\n", text)
    return text


def _reports(loop):
    """What the 'asyncio' logger prints in debug mode for a slow callback,
    an exception in a callback and a pending task that is collected."""
    loop.set_debug(True)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        loop.slow_callback_duration = 0.01
        loop.call_soon(time.sleep, 0.02)
        loop.call_soon(loop.stop)
        loop.run_forever()
        # Only that callback is meant to be slow (a slower build, e.g. under
        # tests/sanitize.py, took more than 10 ms over the task below).
        loop.slow_callback_duration = 60.0

        def boom():
            raise ValueError("in a callback")
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        loop.run_forever()

        async def forever():
            await asyncio.Event().wait()
        t = loop.create_task(forever())
        loop.run_until_complete(asyncio.sleep(0))
        del t
        gc.collect()
    finally:
        logger.removeHandler(handler)
    text = _normalized(log.getvalue())
    # Future repr: where the awaited future was created (differs by design).
    return re.sub(r"wait_for=<Future pending cb=\[[^\]]*\] created at [^>]*>", "wait_for=<F>", text)


@pytest.fixture
def pair(loop_factory):
    made = []

    def both(fn):
        results = []
        for factory in (loop_factory, asyncio.SelectorEventLoop):
            lp = factory()
            made.append(lp)
            results.append(fn(lp))
        return results
    yield both
    for lp in made:
        if not lp.is_closed():
            lp.close()


def test_source_traceback_ends_at_the_caller(pair):
    ours, ref = pair(_frames)
    assert ref == {k: ("caller" if k != "create_task" else "_frames") for k in ref}
    assert ours == ref


def test_debug_reports_match_asyncio(pair):
    ours, ref = pair(_reports)
    for needle in ("Executing <Handle sleep(0.02)", "Exception in callback",
                   "ValueError: in a callback", "Task was destroyed but it is pending!",
                   "source_traceback: Object created at", "task: <Task pending"):
        assert needle in ref
    assert ours == ref


def test_never_awaited_warning_names_its_origin(loop_factory):
    # debug mode turns on coroutine origin tracking while the loop runs
    # (BaseEventLoop._set_coroutine_origin_tracking): the RuntimeWarning
    # names where the coroutine was created.
    def run_on(factory):
        loop = factory()
        loop.set_debug(True)

        async def never():
            pass

        async def main():
            never()                     # created, never awaited
            gc.collect()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loop.run_until_complete(main())
                gc.collect()
        finally:
            loop.close()
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
                and "never awaited" in str(w.message)]
        # The first line and the innermost frame (where the coroutine was
        # made); the outer frames are the loop's own, which is compiled here.
        return [(m.splitlines()[0], m.splitlines()[1], m.splitlines()[-2:]) for m in msgs]
    ours, ref = run_on(loop_factory), run_on(asyncio.SelectorEventLoop)
    assert ref and ref[0][1] == "Coroutine created at (most recent call last)"
    assert "never()" in ref[0][2][1]
    assert ours == ref
