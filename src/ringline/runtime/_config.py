"""ringline.Config: every setting of the runtime API, with its default.

    cfg = ringline.Config(workers=2, buffer_size=8192)
    cfg.validate()          # ValueError naming the field and the rule

Builder.launch() validates the config it was given; validate() is there to
check one early (e.g. from a command line).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from dataclasses import dataclass, field
from typing import Optional

__all__ = ("Config",)


# The SQ thread spins for up to this long with nothing to do: ten minutes is
# already far past any use (the kernel's own field is a u32).
_SQPOLL_IDLE_MAX_MS = 600_000


def _online_cpus() -> set:
    """The online CPUs (/sys/devices/system/cpu/online, e.g. "0-3,6").  The
    kernel takes an SQ_AFF CPU that is online and in the caller's cpuset,
    whatever the caller's own affinity (taskset); a cpuset refusal (EINVAL)
    makes the worker fall back to a normal ring and say so."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            spec = f.read().strip()
        cpus = set()
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        return cpus
    except (OSError, ValueError):
        return set(os.sched_getaffinity(0))


def _pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass
class Config:
    """Settings of a ringline runtime (one set for every worker)."""

    # ---- the ring ----------------------------------------------------------
    #: io_uring submission queue entries (a power of two).
    sq_entries: int = 256
    #: submit what callbacks queued every this many completions of a long
    #: batch (0 = once per loop iteration); io_uring only.
    flush_interval: int = 0
    #: completion queue entries (a power of two, at least sq_entries).
    cq_entries: int = 4096
    #: provided buffers in each worker's receive buffer ring (a power of two).
    #: 64 x 128 KiB (8 MiB), the asyncio face's ring: with incremental
    #: consumption (below) a small message takes its size, and a large one
    #: arrives in few pieces (README, Benchmarks: the 100 KiB echo with 256 x
    #: 16 KiB).  A kernel before 6.12 fills a whole buffer per receive: with
    #: many connections whose handlers hold their data, raise it.
    ring_size: int = 64
    #: bytes per receive buffer (what one with_data() view holds at most).
    buffer_size: int = 131072
    #: let the kernel fill each receive buffer in pieces (IOU_PBUF_RING_INC,
    #: Linux 6.12+; ignored where the kernel lacks it): a small message takes
    #: its size, not a whole buffer.  io_uring only.
    recv_incremental: bool = True
    #: "io_uring", "poll", or None: the best this kernel allows.
    backend: Optional[str] = None
    #: io_uring only: give each worker's ring a kernel thread that submits
    #: what the worker queues (IORING_SETUP_SQPOLL), so the worker makes no
    #: syscall to submit -- at the price of that thread spinning on a CPU
    #: while there is work.  Worth it only with a CPU to spare for each SQ
    #: thread (README, Backends: on 2 vCPUs shared with the client it lost
    #: throughput at 64 connections, and fell to 1-2 % when its thread shared
    #: a CPU with a busy process).  Where the kernel refuses it (before 5.13
    #: unprivileged: EPERM) the worker logs a warning and runs a normal ring;
    #: loop.stats()['sqpoll_refused'] says why.
    sqpoll: bool = False
    #: milliseconds the SQ thread keeps spinning after the last submission
    #: before it sleeps (and the next submission must wake it with a syscall);
    #: 0 is the kernel's default, 1000.  Used only with sqpoll.
    sqpoll_idle_ms: int = 1000
    #: pin every worker's SQ thread to this CPU (IORING_SETUP_SQ_AFF; an
    #: online CPU, which may lie outside the process's own affinity: the
    #: kernel checks only the cpuset), or None: it may run on any CPU the
    #: workers are pinned from (not on the worker's one CPU, which a 6.x
    #: kernel would give it).  Used only with sqpoll.
    sqpoll_cpu: Optional[int] = None

    # ---- workers -----------------------------------------------------------
    #: worker count; 0 = one per CPU this process may run on.
    workers: int = 0
    #: pin worker i to CPU (core_offset + i) of the allowed set.
    pin_to_core: bool = True
    core_offset: int = 0
    #: "process", "thread", or "auto" (processes unless the interpreter is
    #: free-threaded).
    worker_mode: str = "auto"
    #: seconds launch() waits for every worker to be ready.
    startup_timeout: float = 10.0
    #: seconds a graceful shutdown lets handlers finish before cancelling them.
    shutdown_timeout: float = 5.0

    # ---- connections -------------------------------------------------------
    backlog: int = 1024
    #: connections per worker; more are accepted and closed at once.
    max_connections: int = 16384
    tcp_nodelay: bool = True
    #: send_nowait() copies into this pool: slots per worker ...
    send_pool_slots: int = 1024
    #: ... of this many bytes each.
    send_slot_size: int = 16384
    #: slots of each worker's direct-descriptor table (0 = off): accepted
    #: connections then live in the ring's table, not the process's fd table
    #: (io_uring with FIXED_FD_INSTALL, 6.8; elsewhere real fds).  A full
    #: table refuses connections as max_connections does.  At most
    #: RLIMIT_NOFILE (the kernel's rule) and 1048576.
    fixed_files: int = 0
    #: send() of at least this many bytes uses SEND_ZC (0 = never).
    send_zc_threshold: int = 65536
    #: TLS handshake bound (seconds), both directions.
    tls_handshake_timeout: float = 10.0
    #: server-side TLS for bind() listeners.
    tls: Optional[ssl.SSLContext] = field(default=None, repr=False)
    #: default client context for connect(ssl=True).
    tls_client: Optional[ssl.SSLContext] = field(default=None, repr=False)

    # ---- the loop and the pools ----------------------------------------------
    #: on_tick() runs every loop iteration and at least this often (seconds).
    tick_interval: float = 0.1
    #: threads of resolve()'s pool (0 = resolve() disabled).
    resolver_threads: int = 2
    #: threads creating subprocesses (process workers; at least 1).
    spawner_threads: int = 2
    #: threads of spawn_blocking()'s pool (0 = spawn_blocking() disabled).
    blocking_threads: int = 4
    #: resume a handler's task straight from the completion that satisfies
    #: its connection wait (with_data, send, drain): no future, no call_soon
    #: per message.  False: every wait is an ordinary asyncio future.
    direct_resume: bool = True

    # ---- UDP ---------------------------------------------------------------------
    #: datagrams a UdpCtx keeps received and unread before dropping.
    udp_ring_size: int = 64
    #: largest datagram received in full (bytes).
    udp_buffer_size: int = 65536
    #: sends a UdpCtx may have in flight; send_to() beyond raises.
    udp_send_slots: int = 256

    def validate(self) -> "Config":
        """Check every field; raise ValueError naming the field and the rule.
        Returns self."""
        def bad(name, rule):
            value = getattr(self, name)
            shown = "<SSLContext>" if isinstance(value, ssl.SSLContext) else repr(value)
            raise ValueError(f"Config.{name} {rule}, got {shown}")

        def integer(name, lo=None, hi=None, pow2=False, rule=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, "must be an int")
            if pow2:
                rule = rule or f"must be a power of two in {lo}..{hi}"
                if not _pow2(v):
                    bad(name, rule)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                if rule:
                    bad(name, rule)
                if hi is None:
                    bad(name, f"must be at least {lo}")
                bad(name, f"must be in {lo}..{hi}")

        def number(name, lo, allow_zero=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                bad(name, "must be a number of seconds")
            if v < lo or (v == lo and not allow_zero):
                bad(name, f"must be {'at least' if allow_zero else 'greater than'} {lo}")

        integer("sq_entries", 1, 32768, pow2=True)
        integer("cq_entries", self.sq_entries if isinstance(self.sq_entries, int) else 1,
                65536, pow2=True,
                rule="must be a power of two, at least sq_entries and at most 65536")
        integer("flush_interval", 0, 65536,
                rule="must be 0 (once per iteration) or a completion count up to 65536")
        integer("ring_size", 1, 32768, pow2=True)
        integer("buffer_size", 64, 1 << 20,
                rule="must be in 64..1048576 bytes (one receive buffer)")
        if self.backend not in (None, "io_uring", "poll"):
            bad("backend", "must be None, 'io_uring' or 'poll'")
        self._validate_sqpoll(bad)
        integer("workers", 0, 4096, rule="must be 0 (one per CPU) or a worker count up to 4096")
        if not isinstance(self.pin_to_core, bool):
            bad("pin_to_core", "must be a bool")
        integer("core_offset", 0, rule="must be 0 or more")
        if self.worker_mode not in ("auto", "process", "thread"):
            bad("worker_mode", "must be 'auto', 'process' or 'thread'")
        number("startup_timeout", 0)
        number("shutdown_timeout", 0, allow_zero=True)
        integer("backlog", 1, 65535)
        integer("max_connections", 1, rule="must be at least 1 (connections per worker)")
        if not isinstance(self.tcp_nodelay, bool):
            bad("tcp_nodelay", "must be a bool")
        integer("send_pool_slots", 1, rule="must be at least 1: a zero-sized send pool "
                "could send nothing")
        integer("send_slot_size", 64, 1 << 24, rule="must be in 64..16777216 bytes")
        _check_fixed_files(self.fixed_files, bad)
        integer("send_zc_threshold", 0, rule="must be 0 (never) or a byte count")
        number("tls_handshake_timeout", 0)
        for name in ("tls", "tls_client"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, ssl.SSLContext):
                bad(name, "must be an ssl.SSLContext or None")
        if self.tls is not None and self.tls.check_hostname:
            bad("tls", "must be a server-side context (check_hostname off)")
        number("tick_interval", 0)
        integer("resolver_threads", 0, 256, rule="must be in 0..256 (0 disables resolve())")
        integer("spawner_threads", 1, 256, rule="must be in 1..256: a zero-sized spawner "
                "pool could start no subprocess")
        integer("blocking_threads", 0, 1024,
                rule="must be in 0..1024 (0 disables spawn_blocking())")
        if not isinstance(self.direct_resume, bool):
            bad("direct_resume", "must be a bool")
        if not isinstance(self.recv_incremental, bool):
            bad("recv_incremental", "must be a bool")
        integer("udp_ring_size", 1, 32768, pow2=True)
        integer("udp_buffer_size", 512, 65536, rule="must be in 512..65536 bytes")
        integer("udp_send_slots", 1, rule="must be at least 1: a zero-sized UDP send "
                "pool could send nothing")
        return self

    def _validate_sqpoll(self, bad):
        def wrong_type(name, rule):
            raise TypeError(f"Config.{name} {rule}, got {getattr(self, name)!r}")

        if not isinstance(self.sqpoll, bool):
            wrong_type("sqpoll", "must be a bool")
        v = self.sqpoll_idle_ms
        if isinstance(v, bool) or not isinstance(v, int):
            wrong_type("sqpoll_idle_ms", "must be an int (milliseconds)")
        if not 0 <= v <= _SQPOLL_IDLE_MAX_MS:
            bad("sqpoll_idle_ms", f"must be in 0..{_SQPOLL_IDLE_MAX_MS} milliseconds "
                "(0: the kernel's default, 1000)")
        cpu = self.sqpoll_cpu
        if cpu is None:
            return
        if isinstance(cpu, bool) or not isinstance(cpu, int):
            wrong_type("sqpoll_cpu", "must be an int (a CPU number) or None")
        online = _online_cpus()
        if cpu not in online:
            bad("sqpoll_cpu", "must be None or an online CPU "
                f"({', '.join(map(str, sorted(online)))})")

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: The kernel's largest direct-descriptor table (IORING_MAX_FIXED_FILES).
MAX_FIXED_FILES = 1 << 20


def _check_fixed_files(v, bad) -> None:
    # IORING_REGISTER_FILES2 refuses more slots than RLIMIT_NOFILE (EMFILE)
    # or IORING_MAX_FIXED_FILES (EINVAL), io_uring/rsrc.c: said here, by
    # name, rather than as a fallback to real fds at run time.
    if isinstance(v, bool) or not isinstance(v, int):
        bad("fixed_files", "must be an int")
    if v < 0 or v > MAX_FIXED_FILES:
        bad("fixed_files", f"must be 0 (off) or a slot count up to {MAX_FIXED_FILES} "
            "(the kernel's IORING_MAX_FIXED_FILES)")
    if v:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and v > soft:
            bad("fixed_files", f"must be at most RLIMIT_NOFILE ({soft} here): the kernel "
                "refuses a larger table with EMFILE; raise the limit (ulimit -n, "
                "resource.setrlimit) or ask for fewer slots")
