"""Per-worker counters, their aggregate, and the Prometheus text format.

Each worker owns one block of uint64 counters (_core MetricsBlock).  For
process workers the blocks are slices of one shared anonymous mapping the
launcher creates before forking, so the launcher (and every worker) reads
all of them without messages; connection counters are incremented in the
compiled core as things happen, driver counters (SQEs, CQEs, io_uring_enter)
are copied from the driver once per loop iteration.

    ringline.metrics()                      # {"workers": [...], "total": {...}}
    ringline.render_prometheus()            # text exposition format 0.0.4
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref

from .._core.core import METRIC_HELP, METRIC_NAMES, METRIC_SLOTS, MetricsBlock

__all__ = ("COUNTERS", "NAMES", "SLOT", "MetricsArea", "metrics", "render_prometheus",
           "local_block")

# The slots are defined once, in the compiled core (_core/runtime/metrics.pxi:
# the M_* constants and each one's name and help); everything here derives.
#: The counters' names in slot order.
NAMES = METRIC_NAMES
#: name -> slot index (what MetricsBlock.add() takes).
SLOT = {name: i for i, name in enumerate(NAMES)}
#: (name, kind, help) in slot order.
COUNTERS = tuple((name, "counter", help_) for name, help_ in zip(METRIC_NAMES, METRIC_HELP))
_SLOT_BYTES = METRIC_SLOTS * 8


class MetricsArea:
    """Counter blocks for n workers in one shared mapping."""

    def __init__(self, n: int):
        self.n = n
        self._map = mmap.mmap(-1, max(n, 1) * _SLOT_BYTES)   # MAP_SHARED|MAP_ANONYMOUS
        self._view = memoryview(self._map).cast("Q")

    def block(self, i: int) -> MetricsBlock:
        return MetricsBlock(self._map, i * _SLOT_BYTES)

    def worker(self, i: int) -> dict:
        base = i * METRIC_SLOTS
        d = {name: int(self._view[base + k]) for k, name in enumerate(NAMES)}
        return _with_active(d)

    def workers(self) -> list:
        return [self.worker(i) for i in range(self.n)]


def _with_active(d: dict) -> dict:
    d["connections_active"] = max(
        0, d["connections_accepted"] + d["connections_outbound"] - d["connections_closed"])
    return d


# Running launches register their area here (until shut down or dropped;
# ShutdownHandle.metrics() keeps giving a launch's own final counters).
_areas: "weakref.WeakSet[MetricsArea]" = weakref.WeakSet()
_lock = threading.Lock()
_local: MetricsBlock | None = None


def _after_fork_in_child() -> None:
    # A launcher thread may hold the lock at a worker's fork (os.fork keeps
    # only the forking thread; the lock would stay taken in the child).
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def register(area: MetricsArea) -> None:
    with _lock:
        _areas.add(area)


def unregister(area: MetricsArea) -> None:
    with _lock:
        _areas.discard(area)


def area_metrics(area: MetricsArea) -> dict:
    """metrics() of one launch."""
    workers = [{"worker": i, **d} for i, d in enumerate(area.workers())]
    return {"workers": workers, "total": _total(workers)}


def _total(workers) -> dict:
    total = {name: 0 for name in NAMES}
    total["connections_active"] = 0
    for w in workers:
        for k in total:
            total[k] += w[k]
    return total


def local_block() -> MetricsBlock:
    """The counters of connections made outside any launched worker (a plain
    ``ringline.run()`` program using ``ringline.connect()``)."""
    global _local
    with _lock:
        if _local is None:
            _local = MetricsBlock()
        return _local


def metrics() -> dict:
    """Every running launch's workers' counters, and their sum.

    ``{"workers": [{"worker": i, "connections_accepted": ..., ...}, ...],
    "total": {...}}``; ``connections_active`` is accepted + outbound -
    closed.  Counters of connections made outside any worker are reported as
    worker ``"local"`` when there are any.
    """
    with _lock:
        areas = list(_areas)
        local = _local
    workers = []
    for area in areas:
        for i, d in enumerate(area.workers()):
            workers.append({"worker": i, **d})
    if local is not None:
        d = dict(zip(NAMES, local.values()))
        if any(d.values()):
            workers.append({"worker": "local", **_with_active(d)})
    return {"workers": workers, "total": _total(workers)}


def render_prometheus(m: dict | None = None, prefix: str = "ringline_") -> str:
    """Render metrics() (or the dict given) in the Prometheus text format."""
    if m is None:
        m = metrics()
    lines = []
    items = list(COUNTERS) + [("connections_active", "gauge", "Connections open now.")]
    for name, kind, help_ in items:
        metric = prefix + name + ("_total" if kind == "counter" else "")
        lines.append(f"# HELP {metric} {help_}")
        lines.append(f"# TYPE {metric} {kind}")
        for w in m["workers"]:
            lines.append(f'{metric}{{worker="{w["worker"]}"}} {w[name]}')
    return "\n".join(lines) + "\n"
