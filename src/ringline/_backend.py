"""Backend selection and the io_uring probe.

The default backend is io_uring when ``io_uring_setup`` works here; where it
is refused (ENOSYS, EPERM from seccomp or ``kernel.io_uring_disabled``) the
portable poll backend is used and one line on the ``ringline`` logger names
the cause.  ``RINGLINE_BACKEND`` overrides the default.
"""

from __future__ import annotations

import functools
import logging
import os

from ._core import core as _core

logger = logging.getLogger("ringline")

BACKENDS = ("io_uring", "poll")

# Opcode numbers are ABI (include/uapi/linux/io_uring.h, enum io_uring_op).
_OPCODES = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
    "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT",
    "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT",
    "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE",
    "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE",
    "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT",
    "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR",
    "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
    "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
    "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN",
    "RECV_ZC", "EPOLL_WAIT", "READV_FIXED", "WRITEV_FIXED", "PIPE",
)


@functools.lru_cache(maxsize=None)
def _probe() -> tuple[bool, str, dict]:
    """(usable, reason if not, probe result)."""
    try:
        setup_flags, feats, ops = _core.probe()
    except OSError as exc:
        return False, exc.strerror or str(exc), {}
    return True, "", {"setup_flags": setup_flags, "features": feats, "ops": ops}


def io_uring_status() -> tuple[bool, str]:
    usable, reason, _ = _probe()
    return usable, reason


# Backends built into this version of the core.
_IMPLEMENTED = ("io_uring", "poll")

# The poll backend's readiness mechanism (epoll on Linux, kqueue on
# macOS/BSD; RINGLINE_POLLER where a build has both): chosen by the core.
poller = _core.poller


def available_backends() -> tuple[str, ...]:
    """The backends that can run in this process."""
    usable, _, _ = _probe()
    return tuple(b for b in BACKENDS if b in _IMPLEMENTED and (usable or b != "io_uring"))


def features() -> dict[str, bool]:
    """io_uring opcodes the kernel supports, by name (empty without io_uring)."""
    usable, _, info = _probe()
    if not usable:
        return {}
    ops = info["ops"]
    return {(_OPCODES[i] if i < len(_OPCODES) else f"OP_{i}"): ok for i, ok in ops.items()}


def live_counts() -> dict[str, int]:
    """What the compiled core has lent out or keeps alive in this process:
    ops (alive, in flight, leaked by a ring closed under them), read buffers
    lent, kernel buffers held by ConnCtx and the views over them, send-pool
    slots and held send buffers.  Each returns to its earlier value once
    what used it is closed and collected (tests/test_lifetimes.py)."""
    return _core.live_counts()


_warned = False


def resolve_backend(requested: str | None) -> str:
    global _warned
    if requested is None:
        requested = os.environ.get("RINGLINE_BACKEND") or None
    if requested is not None and requested not in BACKENDS:
        raise ValueError(
            f"unknown ringline backend {requested!r}: expected one of {', '.join(BACKENDS)}")
    usable, reason, _ = _probe()
    if requested == "io_uring":
        if not usable:
            raise RuntimeError(f"the io_uring backend is unavailable: {reason}")
        return "io_uring"
    if requested == "poll":
        if "poll" not in _IMPLEMENTED:
            raise RuntimeError("the poll backend is not built into this version of ringline")
        poller()        # a bad RINGLINE_POLLER fails here, before a loop exists
        return "poll"
    if usable:
        return "io_uring"
    poller()
    if not _warned:
        _warned = True
        logger.warning("ringline: io_uring unavailable (%s); using the poll backend", reason)
    return "poll"


def backend() -> str:
    """The backend a new loop gets by default here."""
    return resolve_backend(None)
