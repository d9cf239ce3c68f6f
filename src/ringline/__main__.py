"""``python -m ringline info``: what this machine gives ringline.
``python -m ringline echo --workers N --port P``: an echo server on the
runtime API (``--mode with_data`` / ``forward`` / ``streams``).

Prints the kernel version, whether io_uring is usable here (and if not,
why: ENOSYS, EPERM from a seccomp filter or ``kernel.io_uring_disabled``),
the ring's setup flags and features, the opcodes the probe found, the
backends available and the one a new loop gets.  ``--json`` prints the
same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys

# Bits of io_uring_params.flags / .features (include/uapi/linux/io_uring.h).
_SETUP_FLAGS = (
    "IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ", "R_DISABLED",
    "SUBMIT_ALL", "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128", "CQE32",
    "SINGLE_ISSUER", "DEFER_TASKRUN", "NO_MMAP", "REGISTERED_FD_ONLY",
    "NO_SQARRAY", "HYBRID_IOPOLL",
)
_FEATURES = (
    "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS", "CUR_PERSONALITY",
    "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED", "EXT_ARG", "NATIVE_WORKERS",
    "RSRC_TAGS", "CQE_SKIP", "LINKED_FILE", "REG_REG_RING", "RECVSEND_BUNDLE",
    "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT",
)


def _bits(value: int, names: tuple[str, ...]) -> list[str]:
    out = [name for i, name in enumerate(names) if value & (1 << i)]
    rest = value & ~((1 << len(names)) - 1)
    if rest:
        out.append(hex(rest))
    return out


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


# Kept in step with _compat.TESTED_VERSIONS, for a copy without the
# compiled core on a platform where _compat does not import (Windows).
_TESTED_FALLBACK = ((3, 11), (3, 12), (3, 13))


def _sqpoll_refused() -> str | None:
    from ringline._core import core
    try:
        return core.probe_sqpoll()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def collect() -> dict:
    import ringline
    from ringline import _native

    try:
        from ringline import _compat
        tested_versions = _compat.TESTED_VERSIONS
        free_threaded = _compat.FREE_THREADED
    except ImportError:
        tested_versions = _TESTED_FALLBACK
        free_threaded = bool(getattr(sys, "_is_gil_enabled", lambda: True)() is False)
    info: dict = {
        "ringline": ringline.__version__,
        "python": sys.version.split()[0],
        "python_tested": sys.version_info[:2] in tested_versions,
        "python_tested_versions": [f"{a}.{b}" for a, b in tested_versions],
        "free_threaded": free_threaded,
        "platform": platform.platform(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "io_uring_disabled": _sysctl("kernel.io_uring_disabled"),
        "native": ringline.NATIVE,
    }
    if not ringline.NATIVE:
        # No compiled core: say why, and which loop new_event_loop() gives.
        info["native_error"] = _native.IMPORT_ERROR
        info["build_note"] = _native.build_note()
        info["backends_available"] = []
        info["backend"] = None
        loop = ringline.new_event_loop()
        try:
            info["loop"] = f"{type(loop).__module__}.{type(loop).__qualname__}"
        finally:
            loop.close()
        return info
    from ringline import _backend
    usable, reason = _backend.io_uring_status()
    info["io_uring"] = {"usable": usable}
    if usable:
        _, _, probe = _backend._probe()
        ops = _backend.features()
        info["io_uring"].update({
            "setup_flags": _bits(probe["setup_flags"], _SETUP_FLAGS),
            "features": _bits(probe["features"], _FEATURES),
            "opcodes": sorted((n for n, ok in ops.items() if ok), key=list(ops).index),
            "opcodes_missing": sorted((n for n, ok in ops.items() if not ok),
                                      key=list(ops).index),
            # None: this process gets SQPOLL rings (Config.sqpoll); else why not.
            "sqpoll_refused": _sqpoll_refused(),
        })
    else:
        info["io_uring"]["reason"] = reason
    info["backends_available"] = list(ringline.available_backends())
    info["pollers"] = list(_backend._core.pollers())   # compiled for the poll backend
    info["RINGLINE_BACKEND"] = os.environ.get("RINGLINE_BACKEND") or None
    # The default backend, without the one-line warning resolve_backend
    # logs on fallback: the reason is printed here anyway.
    log = logging.getLogger("ringline")
    disabled, log.disabled = log.disabled, True
    try:
        chosen = _backend.resolve_backend(None)
        loop = ringline.new_event_loop(chosen)
        try:
            info["backend"] = loop.backend
        finally:
            loop.close()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        info["backend"] = None
        info["backend_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        log.disabled = disabled
    return info


def _print_text(info: dict) -> None:
    w = sys.stdout.write
    w(f"ringline {info['ringline']} (Python {info['python']})\n")
    tested = ", ".join(info["python_tested_versions"])
    w(f"python:   {info['python']}: "
      + ("tested" if info["python_tested"] else "NOT tested")
      + f" (the suite runs on {tested})"
      + (", free-threaded build" if info["free_threaded"] else "") + "\n")
    w(f"kernel:   {info['kernel']}\n")
    if not info["native"]:
        w("core:     NOT AVAILABLE: ringline.NATIVE is False, and ringline.new_event_loop() "
          "returns asyncio's own loop\n")
        w(f"          ({info['loop']})\n")
        w(f"  import error: {info['native_error']}\n")
        if info["build_note"]:
            w(f"  at build time: {info['build_note']}\n")
        else:
            w("  (no build-time record: the core was built but does not import here, or this\n"
              "   copy was installed without ringline's setup.py)\n")
        w("  the compiled core builds on Linux with a C compiler and the Python headers\n"
          "  (reinstall from source there), or comes in a manylinux wheel\n")
        return
    w("core:     compiled (ringline.NATIVE is True)\n")
    if info["io_uring_disabled"] is not None:
        w(f"          kernel.io_uring_disabled = {info['io_uring_disabled']}\n")
    ur = info["io_uring"]
    if ur["usable"]:
        w("io_uring: usable\n")
        w("  setup flags:\n")
        _wrap(w, ur["setup_flags"] or ["-"])
        w("  features:\n")
        _wrap(w, ur["features"] or ["-"])
        total = len(ur["opcodes"]) + len(ur["opcodes_missing"])
        w(f"  opcodes ({len(ur['opcodes'])} of {total} known to this kernel's probe):\n")
        _wrap(w, ur["opcodes"])
        if ur["opcodes_missing"]:
            w("  not supported:\n")
            _wrap(w, ur["opcodes_missing"])
        if ur["sqpoll_refused"] is None:
            w("  SQPOLL: available (Config.sqpoll, python -m ringline echo --sqpoll)\n")
        else:
            w(f"  SQPOLL: not available: {ur['sqpoll_refused']}\n")
    else:
        w(f"io_uring: not usable: {ur['reason']}\n")
    w(f"backends: {', '.join(info['backends_available'])}\n")
    w(f"pollers:  {', '.join(info['pollers']) or '-'} (compiled for the poll backend)\n")
    src = (f"RINGLINE_BACKEND={info['RINGLINE_BACKEND']}" if info["RINGLINE_BACKEND"]
           else "default")
    if info["backend"]:
        w(f"backend chosen: {info['backend']} ({src})\n")
    else:
        w(f"backend chosen: none ({src}): {info['backend_error']}\n")


def _wrap(w, names: list[str], width: int = 76) -> None:
    line = "   "
    for name in names:
        if len(line) + 1 + len(name) > width:
            w(line + "\n")
            line = "   "
        line += " " + name
    if line.strip():
        w(line + "\n")


def _echo_parser(sub) -> None:
    p = sub.add_parser("echo", help="run an echo server on the runtime API (Builder + Handler)")
    p.add_argument("--workers", type=int, default=0, help="worker count (0 = one per CPU)")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mode", default="with_data", choices=("with_data", "forward", "streams", "send"),
                   help="with_data + send_nowait (default), forward_recv_buf, the stream adapter, "
                        "or with_data + a copy + await send()")
    p.add_argument("--backend", choices=("io_uring", "poll"), default=None)
    p.add_argument("--worker-mode", choices=("auto", "process", "thread"), default="auto")
    p.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM) ...")
    p.add_argument("--tls-key", help="... and this key")
    p.add_argument("--shutdown-timeout", type=float, default=1.0)
    p.add_argument("--ring-size", type=int, default=None, help="receive buffers per worker")
    p.add_argument("--buffer-size", type=int, default=None, help="bytes per receive buffer")
    p.add_argument("--no-direct-resume", action="store_true",
                   help="resume handlers through asyncio futures (Config.direct_resume=False)")
    p.add_argument("--no-recv-incremental", action="store_true",
                   help="a whole receive buffer per receive (Config.recv_incremental=False)")
    p.add_argument("--fixed-files", type=int, default=0, metavar="N",
                   help="accepted connections in a direct-descriptor table of N slots per "
                        "worker (Config.fixed_files; io_uring; 0 = real fds)")
    p.add_argument("--send-zc-threshold", type=int, default=None, metavar="N",
                   help="send() of N bytes or more uses SEND_ZC, 0 never (Config.send_zc_threshold; "
                        "--mode send)")
    p.add_argument("--sqpoll", action="store_true",
                   help="io_uring: a kernel thread submits each worker's SQEs (Config.sqpoll)")
    p.add_argument("--sqpoll-idle-ms", type=int, default=None,
                   help="ms the SQ thread spins idle before it sleeps (Config.sqpoll_idle_ms)")
    p.add_argument("--sqpoll-cpu", type=int, default=None,
                   help="pin the SQ threads to this CPU (Config.sqpoll_cpu)")


def _echo_main(args) -> int:
    import ringline
    from ringline.runtime._echo import MODES

    tls = None
    if args.tls_cert:
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    cfg = ringline.Config(workers=args.workers, backend=args.backend,
                          worker_mode=args.worker_mode, pin_to_core=not args.no_pin,
                          shutdown_timeout=args.shutdown_timeout, tls=tls,
                          direct_resume=not args.no_direct_resume,
                          recv_incremental=not args.no_recv_incremental,
                          fixed_files=args.fixed_files,
                          sqpoll=args.sqpoll, sqpoll_cpu=args.sqpoll_cpu)
    if args.sqpoll_idle_ms is not None:
        cfg.sqpoll_idle_ms = args.sqpoll_idle_ms
    if args.send_zc_threshold is not None:
        cfg.send_zc_threshold = args.send_zc_threshold
    if args.ring_size:
        cfg.ring_size = args.ring_size
    if args.buffer_size:
        cfg.buffer_size = args.buffer_size
    try:
        cfg.validate()
    except (ValueError, TypeError) as exc:
        sys.stderr.write(f"python -m ringline echo: {exc}\n")
        return 2
    shutdown, workers = ringline.Builder(cfg).bind((args.host, args.port)).launch(MODES[args.mode])
    addr = shutdown.address()

    def banner():
        sys.stderr.write(f"ringline echo ({args.mode}) on {addr[0]}:{addr[1]}, "
                         f"{len(workers)} worker(s), backend {cfg.backend or ringline.backend()}\n")
        sys.stderr.flush()

    sig = shutdown.wait_on_signal(ready=banner)
    failed = [w for w in workers if w.failed]
    for w in failed:
        sys.stderr.write(f"{w.error}\n")
    if sig is None and not failed:
        return 1          # every worker ended without being asked to
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringline")
    sub = parser.add_subparsers(dest="command")
    p_info = sub.add_parser("info", help="kernel, io_uring support, backend chosen")
    p_info.add_argument("--json", action="store_true", help="print one JSON object")
    _echo_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "echo":
        import ringline
        if not ringline.NATIVE:
            from ringline import _native
            sys.stderr.write(f"python -m ringline echo needs the compiled core: "
                             f"{_native.why_not()}\n")
            return 1
        return _echo_main(args)
    if args.command != "info":
        parser.print_help()
        return 2
    info = collect()
    if not info["native"]:
        if args.json:
            json.dump(info, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_text(info)
        return 0          # an install without the core works: asyncio's loop
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(info)
    return 0 if info["backend"] else 1


if __name__ == "__main__":
    sys.exit(main())
