"""The Handler protocol, and the context a worker hands its callbacks.

A handler class is instantiated once per worker (``create_for_worker``);
every method is optional except ``on_accept`` for a server:

    class Echo(ringline.Handler):
        async def on_accept(self, conn):         # one task per connection
            ...                                  # the connection closes on return
        async def on_start(self):                # a standalone task (client entry point)
            ...
        def on_tick(self, ctx):                  # every loop iteration, >= every tick_interval
            ...
        def on_notify(self, ctx):                # WorkerHandle.notify() / ShutdownHandle.notify()
            ...
        async def on_udp_bind(self, udp):        # once per bind_udp() address
            ...

Subclassing Handler is not required: any class with these methods works.
on_tick, on_notify and on_udp_bind may be plain functions or coroutines (a
coroutine is run as a task).

Context variables: each on_accept call is a task the worker creates when it
accepts, so it runs in a copy of the context the worker started accepting
in (asyncio's server rule: the create_server caller's).  That context has
what create_for_worker() set, and what the launcher's thread had when it
called launch() if the worker is a forked process (a worker thread starts
with an empty one, unless the interpreter makes threads inherit it: 3.14's
thread_inherit_context); not what on_start set (a task of its own), nor
what another connection's task sets.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ("Handler", "HandlerProtocol", "WorkerCtx")


@runtime_checkable
class HandlerProtocol(Protocol):
    @classmethod
    def create_for_worker(cls, worker_id: int) -> Any: ...

    async def on_accept(self, conn) -> None: ...


class Handler:
    """Convenience base class: create_for_worker() calls cls(); the other
    callbacks are absent until a subclass defines them."""

    @classmethod
    def create_for_worker(cls, worker_id: int):
        return cls()

    async def on_accept(self, conn) -> None:
        conn.close()


def has_callback(handler, name: str):
    """handler.<name> if the handler defines it (not just Handler's default)."""
    fn = getattr(handler, name, None)
    if fn is None:
        return None
    base = getattr(Handler, name, None)
    if base is not None and getattr(type(handler), name, None) is base:
        return None
    return fn


class WorkerCtx:
    """What on_tick/on_notify get: the worker they run in."""

    __slots__ = ("_worker",)

    def __init__(self, worker):
        self._worker = worker

    @property
    def worker_id(self) -> int:
        return self._worker.worker_id

    @property
    def config(self):
        return self._worker.config

    @property
    def loop(self):
        return self._worker.loop

    @property
    def addresses(self) -> list:
        """Addresses this worker listens on (TCP, Unix, UDP)."""
        return list(self._worker.addresses)

    @property
    def connections(self) -> int:
        """Connections this worker's handlers are serving now."""
        return len(self._worker.conn_tasks)

    @property
    def shutting_down(self) -> bool:
        return self._worker.stopping

    def request_shutdown(self) -> None:
        """Shut this worker down, gracefully."""
        self._worker.request_shutdown()

    def metrics(self) -> dict:
        """This worker's counters."""
        from ._metrics import NAMES, _with_active
        return _with_active(dict(zip(NAMES, self._worker.metrics.values())))

    def __repr__(self):
        return f"<WorkerCtx worker_id={self.worker_id}>"
