"""Every private CPython name ringline relies on, in one place.

ringline's loop is compiled LoopCore + asyncio's own BaseEventLoop, and it
borrows selector-loop methods, transports' mixins and SSLProtocol's state
machine from asyncio so that asyncio's behaviour (and CPython's own tests)
carry over unchanged.  Those are private names: they move between releases.
Nothing else in the package imports an asyncio submodule, names a private
asyncio function or class, or touches the private attributes listed in
OBJECT_INTERNALS except through this module (tests/test_compat.py greps for
it).  A new CPython release is a change here.

Each name carries a comment: what it is, and the versions in which it has the
shape relied on.  "3.11-3.14" means read in CPython's source of each of those
(3.14 from the 3.14 branch; the interpreters on the development machines are
3.11.7, 3.12.1 and 3.13.0).  Fast paths that rest on an object's private
attributes are switched on by a shape check at import, so an interpreter
whose object looks different gets asyncio's public path, not a crash.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from asyncio import (base_events, base_subprocess, constants, coroutines, events,
                     format_helpers, futures, log, selector_events, sslproto, streams,
                     tasks, transports, trsock, unix_events)

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
PY314 = sys.version_info >= (3, 14)

#: Minor versions whose suite ran green (every backend, CPython's loop-generic
#: tests bound) before a release; `python -m ringline info` reports it.
TESTED_VERSIONS = ((3, 11), (3, 12), (3, 13))
#: Built with the GIL disabled (3.13t/3.14t).  The core is not marked
#: freethreading_compatible (core.pyx): importing it re-enables the GIL.
FREE_THREADED = bool(getattr(sys, "_is_gil_enabled", lambda: True)() is False)


def tested() -> bool:
    return sys.version_info[:2] in TESTED_VERSIONS


# ---------------------------------------------------------------------------
# Module-level names
# ---------------------------------------------------------------------------

#: asyncio.log.logger, the "asyncio" logger asyncio's loops report on. 3.11-3.14.
logger = log.logger

#: events._set_running_loop(loop | None): what run_forever sets.  3.11-3.14
#: (the C accelerator's; 3.13+ keeps it in the thread state).  3.14's C Task
#: refuses to step unless the running loop is the task's: run_forever must
#: set it before the first callback (it does).
def set_running_loop(loop) -> None:
    # Looked up at each call, as BaseEventLoop.run_forever does: CPython's
    # TestPyGetEventLoop swaps in the pure-Python implementation.
    events._set_running_loop(loop)

def is_debug_mode() -> bool:
    """coroutines._is_debug_mode(): PYTHONASYNCIODEBUG / -X dev.  3.11-3.14.
    Looked up at each call: CPython's test_runners patches it."""
    return coroutines._is_debug_mode()

#: tasks._enter_task(loop, task) / tasks._leave_task(loop, task): what a Task
#: step does around coro.send so that current_task() names the task.  The
#: runtime API's direct resume (_core/runtime/direct.pxi) steps a handler's
#: coroutine on its Task's behalf and does the same.  3.11-3.14 (the C
#: accelerator's where it is built).
enter_task = tasks._enter_task
leave_task = tasks._leave_task

#: tasks._current_tasks: the {loop: task} dict current_task() reads and
#: _enter_task/_leave_task write (the C accelerator's own dict when it is
#: built; the Python functions use the same one otherwise).  3.11-3.13.
#: Direct resume stores the task there itself: one dict store per message
#: instead of two calls, and the entry is deleted once per batch.  3.14
#: keeps the running task in the thread state, so there it is None and
#: enter_task/leave_task are used.
current_tasks = None if PY314 else tasks._current_tasks

#: base_events._format_handle(handle): the slow-callback warning's text. 3.11-3.14.
format_handle = base_events._format_handle

#: base_events._check_ssl_socket(sock): sock_* refuse an ssl.SSLSocket. 3.11-3.14.
check_ssl_socket = base_events._check_ssl_socket

#: base_events._HAS_IPv6: socket.has_ipv6, as the sock_connect resolver checks. 3.11-3.14.
HAS_IPv6 = base_events._HAS_IPv6

#: format_helpers.extract_stack(frame, limit=None): public name in a private
#: module; 3.11-3.14.
extract_stack = format_helpers.extract_stack

if PY313:
    def format_callback_source(func, args, debug: bool) -> str:
        """format_helpers._format_callback_source(func, args, *, debug):
        3.13+ shows the arguments only in debug mode (Handle's repr and the
        'Exception in callback' message pass the loop's debug flag)."""
        return format_helpers._format_callback_source(func, args, debug=debug)
else:
    def format_callback_source(func, args, debug: bool) -> str:
        # 3.11-3.12: (func, args), arguments always shown.
        return format_helpers._format_callback_source(func, args)

#: futures._set_result_unless_cancelled(fut, result): the transports' waiter. 3.11-3.14.
set_result_unless_cancelled = futures._set_result_unless_cancelled

#: transports._FlowControlMixin: write-side water marks on a transport.  The
#: cores keep the marks themselves (CoreTransport maps the mixin's attributes);
#: the mixin stays a base so isinstance and asyncio's reads of it hold. 3.11-3.14.
FlowControlMixin = transports._FlowControlMixin

#: streams.FlowControlMixin: a protocol's drain() support (pipes). 3.11-3.14.
StreamFlowControlMixin = streams.FlowControlMixin

#: streams._DEFAULT_LIMIT: StreamReader's default limit (64 KiB). 3.11-3.14.
STREAM_DEFAULT_LIMIT = streams._DEFAULT_LIMIT

#: trsock.TransportSocket: the socket wrapper in get_extra_info('socket'). 3.11-3.14.
TransportSocket = trsock.TransportSocket

#: constants: _SendfileMode (a transport's _sendfile_compatible) 3.11-3.14;
#: the accept retry delay and TLS timeouts asyncio uses as defaults.
SendfileMode = constants._SendfileMode
ACCEPT_RETRY_DELAY = constants.ACCEPT_RETRY_DELAY
SSL_HANDSHAKE_TIMEOUT = constants.SSL_HANDSHAKE_TIMEOUT
SSL_SHUTDOWN_TIMEOUT = constants.SSL_SHUTDOWN_TIMEOUT

#: base_subprocess.BaseSubprocessTransport(loop, protocol, args, shell, stdin,
#: stdout, stderr, bufsize, waiter=None, extra=None, **kwargs); its _start()
#: is given a ready Popen by ringline's subclass. 3.11-3.14.
BaseSubprocessTransport = base_subprocess.BaseSubprocessTransport

#: sslproto: SSLProtocol (3.11's rewrite: SSLProtocolState, _do_read,
#: _process_outgoing...; same shape 3.11-3.14), SSLAgainErrors and
#: _SSLProtocolTransport.write, which the compiled record path replaces.
SSLProtocol = sslproto.SSLProtocol
SSLProtocolState = sslproto.SSLProtocolState
SSLAgainErrors = sslproto.SSLAgainErrors
SSLProtocolTransport_write = sslproto._SSLProtocolTransport.write
SSLProtocol_do_read = sslproto.SSLProtocol._do_read

#: BaseEventLoop.getaddrinfo (public method, called unbound for the
#: resolver thread path). 3.11-3.14.
base_getaddrinfo = base_events.BaseEventLoop.getaddrinfo


# ---------------------------------------------------------------------------
# BaseEventLoop's state
# ---------------------------------------------------------------------------

def init_loop_state(loop, debug: bool) -> None:
    """BaseEventLoop.__init__ without _ready/_scheduled, which LoopCore owns
    (same names, same defaults), plus _UnixSelectorEventLoop's fields that
    the borrowed unix methods read."""
    loop._timer_cancelled_count = 0
    loop._closed = False
    loop._stopping = False
    loop._default_executor = None
    loop._internal_fds = 0
    loop._thread_id = None
    loop._exception_handler = None
    loop.set_debug(debug)
    loop.slow_callback_duration = 0.1
    loop._current_handle = None
    loop._task_factory = None
    loop._coroutine_origin_tracking_enabled = False
    loop._coroutine_origin_tracking_saved_depth = None
    loop._asyncgens = weakref.WeakSet()
    loop._asyncgens_shutdown_called = False
    loop._executor_shutdown_called = False
    loop._signal_handlers = {}
    if PY313:
        # 3.13+: run_forever's setup/cleanup halves keep the old asyncgen
        # hooks here; _UnixSelectorEventLoop.create_unix_server records a
        # path socket's inode for _stop_serving to unlink it.
        loop._old_agen_hooks = None
        loop._unix_server_sockets = {}


# ---------------------------------------------------------------------------
# Server (base_events.Server) tracking of its transports
# ---------------------------------------------------------------------------

if PY313:
    # 3.13+: Server._attach(transport)/_detach(transport) keep a WeakSet of
    # client transports for close_clients()/abort_clients().
    def server_attach(server, transport) -> None:
        server._attach(transport)

    def server_detach(server, transport) -> None:
        server._detach(transport)
else:
    # 3.11-3.12: a count (_active_count) only.
    def server_attach(server, transport) -> None:
        server._attach()

    def server_detach(server, transport) -> None:
        server._detach()


def unix_server_cleanup_begin(loop, sock):
    """3.13+: _UnixSelectorEventLoop._stop_serving unlinks the socket file a
    create_unix_server(cleanup_socket=True) made.  The first half: the path
    to unlink (or None), read before the socket is closed."""
    if PY313 and sock in loop._unix_server_sockets:
        return sock.getsockname()
    return None


def unix_server_cleanup_end(loop, sock, path) -> None:
    # 3.13's _UnixSelectorEventLoop._stop_serving, second half.
    prev_ino = loop._unix_server_sockets.pop(sock)
    try:
        if os.stat(path).st_ino == prev_ino:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)


# ---------------------------------------------------------------------------
# Selector-loop methods the loop borrows (asyncio's own code, unchanged)
# ---------------------------------------------------------------------------

_Sel = selector_events.BaseSelectorEventLoop
_Unix = unix_events._UnixSelectorEventLoop


def os_sendfile_available() -> bool:
    """Whether asyncio's unix loop offers native sock_sendfile: it checks
    ``unix_events.os.sendfile`` on each call (3.11-3.14), and the io_uring
    path (SPLICE in the ring) offers it exactly where asyncio would, so a
    caller that takes it away (CPython's test_sock_sendfile_not_available)
    gets asyncio's fallback."""
    return hasattr(unix_events.os, "sendfile")


class SelectorLoopMethods:
    """Methods of asyncio's selector loops that run unchanged on ringline's
    primitives (add_reader/add_writer, sock_*, _make_*_transport).  A base of
    EventLoop placed after LoopCore, so the compiled methods win."""

    # _UnixSelectorEventLoop (unix_events.py), 3.11-3.14 unless noted.
    create_unix_connection = _Unix.create_unix_connection
    # 3.13+: cleanup_socket=True and _unix_server_sockets (init_loop_state).
    create_unix_server = _Unix.create_unix_server
    add_signal_handler = _Unix.add_signal_handler
    remove_signal_handler = _Unix.remove_signal_handler
    _handle_signal = _Unix._handle_signal
    _check_signal = _Unix._check_signal
    _process_self_data = _Unix._process_self_data
    _make_read_pipe_transport = _Unix._make_read_pipe_transport
    _make_write_pipe_transport = _Unix._make_write_pipe_transport
    # os.sendfile over writability (the poll backend's sock_sendfile).
    _sock_sendfile_readiness = _Unix._sock_sendfile_native
    _sock_sendfile_native_impl = _Unix._sock_sendfile_native_impl
    _sock_sendfile_update_filepos = _Unix._sock_sendfile_update_filepos
    _sock_add_cancellation_callback = _Unix._sock_add_cancellation_callback

    # BaseSelectorEventLoop (selector_events.py), 3.11-3.14.
    # _sendfile_native: a transport hands its socket over (empty waiter).
    _sendfile_native = _Sel._sendfile_native
    # _accept_connection2(protocol_factory, conn, extra, sslcontext, server,
    # ssl_handshake_timeout, ssl_shutdown_timeout): same signature 3.11-3.14.
    _accept_connection2 = _Sel._accept_connection2
    _ensure_fd_no_transport = _Sel._ensure_fd_no_transport
    _read_from_self = _Sel._read_from_self


# ---------------------------------------------------------------------------
# The policy system (deprecated in 3.14, to be removed in 3.16)
# ---------------------------------------------------------------------------

if PY314:
    # 3.14: asyncio.DefaultEventLoopPolicy warns on access; the base class
    # was renamed _BaseDefaultEventLoopPolicy and child watchers are gone.
    BasePolicy = events._BaseDefaultEventLoopPolicy
else:
    # 3.11-3.13: the unix policy, so get_child_watcher() still answers for
    # code that asks (deprecated from 3.12).
    BasePolicy = unix_events._UnixDefaultEventLoopPolicy

#: Set the policy without 3.14's DeprecationWarning (ringline.install()
#: warns once itself): events._set_event_loop_policy in 3.14.
set_event_loop_policy = (events._set_event_loop_policy if PY314
                         else events.set_event_loop_policy)


# ---------------------------------------------------------------------------
# Child watchers (3.11-3.13; deprecated in 3.12, removed in 3.14)
# ---------------------------------------------------------------------------

#: asyncio's _UnixSelectorEventLoop._make_subprocess_transport raises this
#: (same text 3.11-3.13) when the watcher's is_active() is false.
CHILD_WATCHER_INACTIVE = ("asyncio.get_child_watcher() is not activated, "
                          "subprocess support is not installed.")

#: 3.11: ``with events.get_child_watcher() as watcher:`` -- is_active() and
#: add_child_handler() are called on what __enter__ returns.  3.12-3.13:
#: ``with watcher:`` -- on the watcher itself.  (CPython's
#: GenericWatcherTests checks the exact calls on a mock watcher.)
CHILD_WATCHER_USES_ENTERED = not PY312

if PY314:
    def installed_child_watcher():
        # 3.14: child watchers are gone (no set_child_watcher to install one).
        return None
else:
    _Policy = unix_events._UnixDefaultEventLoopPolicy
    _AbstractPolicy = events.AbstractEventLoopPolicy

    def installed_child_watcher():
        """The child watcher the program installed on the event loop
        policy, or None; never creates one.

        asyncio's unix loop calls ``events.get_child_watcher()``, which makes
        the policy create a watcher when it has none.  Here: no policy yet
        (``events._event_loop_policy`` is None, 3.11-3.13) means no watcher;
        a policy whose get_child_watcher is _UnixDefaultEventLoopPolicy's
        (asyncio's default policy, ringline's EventLoopPolicy) keeps its
        watcher in ``_watcher`` (OBJECT_INTERNALS; None until
        set_child_watcher() or get_child_watcher() sets it), read without
        creating one; a policy without get_child_watcher of its own
        (AbstractEventLoopPolicy's raises NotImplementedError, so asyncio's
        unix loop cannot spawn under it) has none: the pidfd path; a
        policy class that implements get_child_watcher itself is asked, as
        asyncio asks it (3.12+'s DeprecationWarning silenced, as asyncio's
        loop silences it)."""
        policy = events._event_loop_policy
        if policy is None:
            return None
        method = getattr(type(policy), "get_child_watcher", None)
        if method is None or method is _AbstractPolicy.get_child_watcher:
            return None
        if method is _Policy.get_child_watcher:
            # A unix policy without _watcher (POLICY_WATCHER_SHAPE false, a
            # future release): treated as having none.
            return getattr(policy, "_watcher", None) if POLICY_WATCHER_SHAPE else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return policy.get_child_watcher()


# ---------------------------------------------------------------------------
# BaseEventLoop's hooks: private method names asyncio's own code calls on a
# loop, which EventLoop (or LoopCore) implements.  Same names and signatures
# 3.11-3.14; tests/test_compat.py checks that each still exists upstream.
# ---------------------------------------------------------------------------

LOOP_HOOKS = (
    "_make_socket_transport", "_make_ssl_transport", "_make_datagram_transport",
    "_make_subprocess_transport", "_start_serving", "_stop_serving",
    "_sock_sendfile_native", "_make_self_pipe", "_close_self_pipe", "_add_callback",
    "_selector", "_process_events", "_write_to_self", "_run_once",
    "_add_reader", "_remove_reader", "_add_writer", "_remove_writer",
    "_ensure_resolved", "_timer_handle_cancelled", "_check_closed", "_check_running",
    "_set_coroutine_origin_tracking", "_asyncgen_firstiter_hook",
    "_asyncgen_finalizer_hook",
)


# ---------------------------------------------------------------------------
# subprocess.Popen
# ---------------------------------------------------------------------------

def popen_disown(proc) -> None:
    """Popen._child_created = False: the child is ringline's to reap, so
    Popen.__del__ must not queue it for subprocess._cleanup().  3.11-3.14."""
    proc._child_created = False


# ---------------------------------------------------------------------------
# Private attributes of asyncio objects that compiled fast paths touch
# ---------------------------------------------------------------------------

#: Attribute names read or written on asyncio objects, by class.  The files
#: named may use these (and only these) private names of those objects; the
#: shape checks below switch a fast path off where one is missing.
OBJECT_INTERNALS = {
    # StreamReader (streams.py): feed_data/_wakeup_waiter done in C
    # (_core/transport/stream.pxi) and ConnStreamReader._wait_for_data (runtime/_streams.py).
    # Same attributes 3.11-3.14.
    "StreamReader": ("_buffer", "_waiter", "_limit", "_eof", "_paused",
                     "_transport", "_wait_for_data", "_exception"),
    # StreamReaderProtocol: the reader behind a weak reference. 3.11-3.14.
    "StreamReaderProtocol": ("_stream_reader_wr",),
    # SSLProtocol (sslproto.py, 3.11's rewrite, unchanged in shape through
    # 3.14): the record path in _core/transport/tls.pxi and aio/_sslproto.py.
    "SSLProtocol": (
        "_state", "_app_reading_paused", "_ssl_reading_paused", "_app_writing_paused",
        "_ssl_writing_paused", "_app_protocol_is_buffer", "_write_buffer_size",
        "_incoming_high_water", "_incoming_low_water", "_outgoing_high_water",
        "_outgoing_low_water", "_transport", "_app_protocol", "_app_transport",
        "_sslobj", "_incoming", "_outgoing", "_write_backlog", "_do_read",
        "_process_outgoing", "_fatal_error", "_control_ssl_reading",
        "_control_app_writing", "_write_appdata", "_start_shutdown", "_do_write",
        "_do_shutdown", "_do_handshake", "_do_flush", "_call_eof_received"),
    # Future/Task protocol: the flag a Task reads from an awaited future
    # (documented in asyncio's futures.py; 3.11-3.14).
    "Future": ("_asyncio_future_blocking",),
    # _UnixDefaultEventLoopPolicy (unix_events.py, 3.11-3.13; gone in 3.14):
    # the installed child watcher, read by installed_child_watcher().
    "_UnixDefaultEventLoopPolicy": ("_watcher",),
}


def _has(obj, names) -> bool:
    return all(hasattr(obj, n) for n in names)


class _NoLoop:
    # StreamReader.__init__ asks its loop get_debug() only; without a loop
    # argument it would call get_event_loop(), which makes a loop (3.12,
    # 3.13, with a DeprecationWarning) or raises (3.14).
    def get_debug(self):
        return False


def _streamreader_shape_ok() -> bool:
    # Instance attributes: check a reader made at import, on no loop.
    try:
        r = streams.StreamReader(loop=_NoLoop())
    except Exception:  # pragma: no cover - a future signature change
        return False
    return (_has(r, OBJECT_INTERNALS["StreamReader"])
            and isinstance(r._buffer, bytearray)
            and hasattr(streams.StreamReaderProtocol, "_stream_reader"))


def _sslprotocol_shape_ok() -> bool:
    methods = [n for n in OBJECT_INTERNALS["SSLProtocol"] if n.startswith("_do_")
               or n in ("_fatal_error", "_control_ssl_reading", "_control_app_writing",
                        "_write_appdata", "_start_shutdown", "_process_outgoing",
                        "_call_eof_received")]
    return (_has(sslproto.SSLProtocol, methods)
            and _has(sslproto.SSLProtocolState, ("WRAPPED", "DO_HANDSHAKE", "FLUSHING",
                                                 "SHUTDOWN")))


#: Feed an exact StreamReader's buffer in C (stream.pxi).
STREAM_READER_FAST = _streamreader_shape_ok()
#: Compile SSLProtocol's per-record path (aio/_sslproto.py, _core/transport/tls.pxi).
SSL_RECORD_PATH = _sslprotocol_shape_ok()


def _policy_watcher_shape_ok() -> bool:
    # An instance attribute: check a policy made at import (3.11-3.13; no
    # child watchers in 3.14).
    if PY314:
        return False
    try:
        policy = unix_events._UnixDefaultEventLoopPolicy()
    except Exception:  # pragma: no cover - a future signature change
        return False
    return (_has(policy, OBJECT_INTERNALS["_UnixDefaultEventLoopPolicy"])
            and policy._watcher is None)


#: The unix policy keeps its child watcher in _watcher (installed_child_watcher).
POLICY_WATCHER_SHAPE = _policy_watcher_shape_ok()


# ---------------------------------------------------------------------------
# 3.14: read in CPython 3.14.0rc1's Lib/asyncio (no 3.14 interpreter on the
# development machines, and no 3.14 release branch reachable; rc1 is past the
# feature freeze).  Of the names above:
#
# Unchanged 3.13 -> 3.14: BaseEventLoop.__init__ (so init_loop_state), Server
#   (_attach/_detach take the transport, as in 3.13), getaddrinfo, start_tls,
#   _format_handle, _check_ssl_socket, _HAS_IPv6, every SelectorLoopMethods
#   entry but add_signal_handler (which now calls the internal
#   _iscoroutinefunction, same behaviour), transports.py (_FlowControlMixin),
#   trsock.py, constants.py, streams.py (StreamReader's internals,
#   _DEFAULT_LIMIT, FlowControlMixin), format_helpers.py, base_subprocess's
#   constructor and _start, Popen._child_created, SSLProtocol's internals.
# Changed in 3.14, and what ringline does about it:
#   - policies deprecated (removal in 3.16), DefaultEventLoopPolicy warns on
#     access, BaseDefaultEventLoopPolicy renamed _BaseDefaultEventLoopPolicy:
#     BasePolicy / set_event_loop_policy above; ringline.install() warns and
#     points at run()/loop_factory; run() and the CLI use asyncio.Runner.
#   - child watchers removed: installed_child_watcher() answers None, so
#     every child's exit is awaited on its pidfd in the ring; the
#     conformance binding of test_subprocess is 3.14's on every version.
#   - asyncio.get_event_loop() no longer creates a loop: the StreamReader
#     shape check passes a stub loop.
#   - asyncio.iscoroutinefunction deprecated: unused here.
#   - the C Task steps only while its loop is the thread's running loop:
#     run_forever sets it first (set_running_loop).
#   - call_soon_threadsafe builds _ThreadSafeHandle and appends to _ready
#     itself: LoopCore overrides call_soon_threadsafe, so unaffected.
#   - create_task(coro, **kwargs) passes eager_start etc. to the factory:
#     BaseEventLoop.create_task is inherited, so it follows.
#   - _SSLProtocolTransport.is_closing() also asks SSLProtocol._transport:
#     SSLCore keeps _transport readable (a TLSField).
#   - run_forever calls _run_forever_setup before its try (gh-130145):
#     ringline's run_forever checks closed/running before its try already.
#   - BaseSubprocessTransport.send_signal uses os.kill (3.13+): overridden in
#     _subprocess.SubprocessTransport to signal through the pidfd.
# C API: PyWeakref_GetObject (transport/tls.pxi's _deref) is deprecated since 3.13
#   and removed in 3.15; PyWeakref_GetRef replaces it there.
