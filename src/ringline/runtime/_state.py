"""The runtime a loop's connections share: send pool, counters, thread pools.

A launched worker has its own (built from the Config it was launched with);
any other ringline loop gets a default one on first use, so
``ringline.connect()``, ``spawn_blocking()`` and ``resolve()`` work in a
plain ``ringline.run(main())`` program too.

    await ringline.spawn_blocking(fn, *args)     # blocking pool, idle priority
    await ringline.resolve("example.com", 443)   # resolver pool
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import socket
import threading

from ._config import Config
from .._core.core import ConnEnv, SendPool
from ._metrics import local_block

__all__ = ("Runtime", "current_runtime", "spawn_blocking", "resolve", "request_shutdown",
           "PoolDisabledError")


class PoolDisabledError(RuntimeError):
    """A pool the call needs is configured with 0 threads."""


def _idle_priority() -> None:
    # Blocking work must not take the CPU from the loops: SCHED_IDLE where
    # allowed (per thread on Linux), else the lowest nice value.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except (AttributeError, OSError):
        pass


class _Pools:
    """The blocking and resolver pools, created on first use."""

    def __init__(self, config: Config, name: str):
        self.config = config
        self.name = name
        self._lock = threading.Lock()
        self._blocking = None
        self._resolver = None

    def blocking(self) -> concurrent.futures.Executor:
        n = self.config.blocking_threads
        if n == 0:
            raise PoolDisabledError(
                "spawn_blocking() is disabled: Config.blocking_threads is 0")
        with self._lock:
            if self._blocking is None:
                self._blocking = concurrent.futures.ThreadPoolExecutor(
                    n, thread_name_prefix=f"{self.name}-blocking", initializer=_idle_priority)
            return self._blocking

    def resolver(self) -> concurrent.futures.Executor:
        n = self.config.resolver_threads
        if n == 0:
            raise PoolDisabledError("resolve() is disabled: Config.resolver_threads is 0")
        with self._lock:
            if self._resolver is None:
                self._resolver = concurrent.futures.ThreadPoolExecutor(
                    n, thread_name_prefix=f"{self.name}-resolver")
            return self._resolver

    def shutdown(self, wait: bool = False) -> None:
        with self._lock:
            pools, self._blocking, self._resolver = (self._blocking, self._resolver), None, None
        for p in pools:
            if p is not None:
                p.shutdown(wait=wait, cancel_futures=True)


class Runtime:
    """Per-loop state of the runtime API."""

    def __init__(self, loop, config: Config, metrics_block=None, worker=None, pools=None):
        self.loop = loop
        self.config = config
        self.worker = worker
        self.metrics = metrics_block if metrics_block is not None else local_block()
        self.pool = SendPool(config.send_pool_slots, config.send_slot_size, self.metrics)
        # Whether SEND_ZC is used is the driver's to say (its zero_copy_send).
        driver = getattr(loop, "_driver", None)
        self.env = ConnEnv(
            self.pool, self.metrics, config.buffer_size, config.send_zc_threshold,
            bool(getattr(driver, "zero_copy_send", False)), 0,
            f"Config.send_pool_slots={config.send_pool_slots}, "
            f"send_slot_size={config.send_slot_size}")
        self.pools = pools if pools is not None else _Pools(config, "ringline")

    def spawn_blocking(self, fn, *args) -> asyncio.Future:
        pool = self.pools.blocking()
        ctx = contextvars.copy_context()
        return self.loop.run_in_executor(pool, functools.partial(ctx.run, fn, *args))

    def resolve(self, host, port, family=0, type=socket.SOCK_STREAM) -> asyncio.Future:
        pool = self.pools.resolver()
        return self.loop.run_in_executor(
            pool, functools.partial(_getaddrinfo, host, port, family, type))


def _getaddrinfo(host, port, family, type_):
    seen = []
    for fam, _, _, _, sa in socket.getaddrinfo(host, port, family, type_):
        item = (fam, sa)
        if item not in seen:
            seen.append(item)
    return seen


_default_config: Config | None = None
_default_pools: _Pools | None = None
_default_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Another thread may hold it at fork; the child has only the forking one.
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _defaults():
    global _default_config, _default_pools
    with _default_lock:
        if _default_config is None:
            _default_config = Config()
            _default_pools = _Pools(_default_config, "ringline")
        return _default_config, _default_pools


def current_runtime(loop=None) -> Runtime:
    """The runtime of ``loop`` (the running loop by default)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    rt = getattr(loop, "_ringline_runtime", None)
    if rt is None:
        if not hasattr(loop, "_iter_hook"):
            raise TypeError(
                f"the ringline runtime API needs a ringline event loop, not {type(loop).__name__} "
                f"(use ringline.run(), ringline.new_event_loop() or a launched worker)")
        config, pools = _defaults()
        rt = Runtime(loop, config, pools=pools)
        loop._ringline_runtime = rt
    return rt


def _pools_for_running_loop():
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("no running event loop") from None
    rt = getattr(loop, "_ringline_runtime", None)
    if rt is None:
        if hasattr(loop, "_iter_hook"):
            rt = current_runtime(loop)
        else:
            config, pools = _defaults()
            return loop, pools
    return loop, rt.pools


def spawn_blocking(fn, *args) -> asyncio.Future:
    """Run ``fn(*args)`` on the blocking pool (threads at idle priority);
    returns an awaitable future.  PoolDisabledError when the pool has 0
    threads."""
    loop, pools = _pools_for_running_loop()
    pool = pools.blocking()
    ctx = contextvars.copy_context()
    return loop.run_in_executor(pool, functools.partial(ctx.run, fn, *args))


def resolve(host, port, *, family=0, type=socket.SOCK_STREAM) -> asyncio.Future:
    """Resolve ``host`` on the resolver pool; the future's result is a list
    of ``(family, sockaddr)`` in getaddrinfo's order.  PoolDisabledError when
    the pool has 0 threads."""
    loop, pools = _pools_for_running_loop()
    pool = pools.resolver()
    return loop.run_in_executor(pool, functools.partial(_getaddrinfo, host, port, family, type))


def request_shutdown() -> None:
    """Shut down the calling worker (only it), gracefully."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("request_shutdown() must be called from a ringline worker") from None
    rt = getattr(loop, "_ringline_runtime", None)
    if rt is None or rt.worker is None:
        raise RuntimeError("request_shutdown() must be called from a launched ringline worker")
    rt.worker.request_shutdown()
