"""The one place that says which CPython conformance tests ringline skips.

Every entry maps a test of a CPython mixin to a ``Skip`` with one or more
*tags*.  A test is skipped when at least one of its tags is not enabled;
the skip reason names exactly what is missing, e.g.
``needs transports (issue 3)`` or
``needs transports (issue 3), TLS (issue 5)``.

Turning a whole category on or off
----------------------------------
* Edit ``ENABLED_FEATURES`` below when ringline grows a feature (e.g. add
  ``"transports"`` when issue 3 lands).
* Or, without editing: ``RINGLINE_CONFORMANCE_FEATURES="+transports,+unix"``
  (``-tag`` removes, ``all`` enables every feature, ``none`` clears; items are
  applied left to right on top of ``ENABLED_FEATURES``).
* ``RINGLINE_CONFORMANCE_NO_SKIPS=1`` applies no entry at all (only CPython's
  own platform skips remain) - to see what really fails.

Special tags (not features)
---------------------------
``private``   the test mocks or calls asyncio's private internals
              (``loop._run_once``, ``base_events.socket``...): a loop that
              is not asyncio's own ``BaseEventLoop`` can't pass it.  Enable
              it (``+private``) to try anyway.
``bug``       a known ringline bug, with a one-line cause: skipped so that the
              suite stays green, listed so that it gets fixed.  ``+bug`` runs
              them.
``platform``  the test cannot run on this machine whatever the loop; applied
              in every mode, including asyncio mode.

In asyncio mode (``RINGLINE_TEST_LOOP=asyncio``) every feature, ``private``
and ``bug`` are enabled, so only ``platform`` entries skip.
"""

from __future__ import annotations

import os
import unittest
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, Optional, Tuple


@dataclass(frozen=True)
class Feature:
    label: str
    issue: int

    def describe(self) -> str:
        return f"{self.label} (issue {self.issue})"


#: Every feature tag.  Reason strings are built from these labels.
FEATURES: Dict[str, Feature] = {
    # issue 3
    "transports": Feature("transports", 3),   # create_server/connection, TCP transports
    "streams": Feature("streams", 3),         # asyncio.start_server/open_connection
    "unix": Feature("unix sockets", 3),       # create_unix_server/connection
    # issue 5
    "udp": Feature("UDP datagram endpoints", 5),
    "tls": Feature("TLS", 5),
    "pipes": Feature("pipes", 5),             # connect_read_pipe/connect_write_pipe, pty
    "subprocess": Feature("subprocesses", 5),
    "signals": Feature("signals", 5),         # add_signal_handler
    "sendfile": Feature("sendfile on transports", 5),  # loop.sendfile()
}

SPECIAL_TAGS = ("private", "bug", "platform")

#: What ringline supports today (timers, callbacks, executor,
#: call_soon_threadsafe, add_reader/add_writer, sock_*, getaddrinfo need no
#: tag: they are the baseline).  Add a tag here when its issue lands.
ENABLED_FEATURES: FrozenSet[str] = frozenset({
    "transports", "streams", "unix",                    # issue 3
    "tls", "sendfile", "udp", "pipes", "subprocess", "signals",  # issue 5
})

FEATURES_ENV = "RINGLINE_CONFORMANCE_FEATURES"
NO_SKIPS_ENV = "RINGLINE_CONFORMANCE_NO_SKIPS"


@dataclass(frozen=True)
class Skip:
    tags: Tuple[str, ...] = ()
    private: Optional[str] = None   # what private internals it touches
    bug: Optional[str] = None       # one-line cause of a known ringline bug
    platform: Optional[str] = None  # why it can't run on this machine
    note: Optional[str] = None      # appended to the reason, e.g. "(via create_server)"

    def all_tags(self) -> Tuple[str, ...]:
        extra = tuple(t for t, v in (("private", self.private),
                                     ("bug", self.bug),
                                     ("platform", self.platform)) if v)
        return tuple(self.tags) + extra

    def reason(self, enabled: Iterable[str]) -> Optional[str]:
        """The skip reason given the enabled tags, or None to run the test."""
        enabled = set(enabled)
        parts = []
        if self.platform:
            parts.append(f"platform: {self.platform}")
        missing = [FEATURES[t].describe() for t in self.tags if t not in enabled]
        if missing:
            text = "needs " + ", ".join(missing)
            if self.note:
                text += f" {self.note}"
            parts.append(text)
        if self.private and "private" not in enabled:
            parts.append(f"mocks asyncio private internals: {self.private}")
        if self.bug and "bug" not in enabled:
            parts.append(f"known ringline bug: {self.bug}")
        return "; ".join(parts) or None


def needs(*tags: str, note: Optional[str] = None, private: Optional[str] = None,
          bug: Optional[str] = None) -> Skip:
    for t in tags:
        if t not in FEATURES:
            raise ValueError(f"unknown feature tag {t!r}")
    return Skip(tags=tags, note=note, private=private, bug=bug)


def private(what: str) -> Skip:
    return Skip(private=what)


def bug(what: str) -> Skip:
    return Skip(bug=what)


def platform(why: str) -> Skip:
    return Skip(platform=why)


# ---------------------------------------------------------------------------
# The skip table: CPython mixin name -> {test name: Skip}.
# Keys are the mixin's class name as bound in tests/test_cpython_*.py.
# ---------------------------------------------------------------------------

_SRV = "(via create_server)"

SKIPS: Dict[str, Dict[str, Skip]] = {
    # test.test_asyncio.test_events.EventLoopTestsMixin (59 tests)
    "EventLoopTestsMixin": {
        # signals
        "test_add_signal_handler": needs("signals"),
        "test_signal_handling_while_selecting": needs("signals"),
        "test_signal_handling_args": needs("signals"),
        "test_close": needs("signals", note="(last check: add_signal_handler on a closed loop)"),
        # TCP transports
        "test_create_connection": needs("transports"),
        "test_create_connection_local_addr": needs("transports"),
        "test_create_connection_local_addr_in_use": needs("transports"),
        "test_create_connection_local_addr_skip_different_family": needs("transports"),
        "test_create_connection_local_addr_nomatch_family": needs("transports"),
        "test_connect_accepted_socket": needs("transports"),
        "test_connect_accepted_socket_ssl_timeout_for_plain_socket": needs("transports"),
        "test_create_server": needs("transports"),
        "test_create_server_reuse_port": needs("transports"),
        "test_create_server_sock": needs("transports"),
        "test_create_server_addr_in_use": needs("transports"),
        "test_create_server_dual_stack": needs("transports"),
        "test_server_close": needs("transports"),
        "test_create_server_multiple_hosts_ipv4": needs("transports"),
        "test_create_server_multiple_hosts_ipv6": needs("transports"),
        # unix sockets
        "test_create_unix_connection": needs("unix"),
        "test_create_unix_server": needs("unix"),
        "test_create_unix_server_path_socket_error": needs("unix"),
        # TLS
        "test_create_ssl_connection": needs("transports", "tls"),
        "test_create_ssl_unix_connection": needs("unix", "tls"),
        "test_ssl_connect_accepted_socket": needs("transports", "tls"),
        "test_create_server_ssl": needs("transports", "tls"),
        "test_create_server_ssl_verify_failed": needs("transports", "tls"),
        "test_create_server_ssl_match_failed": needs("transports", "tls"),
        "test_create_server_ssl_verified": needs("transports", "tls"),
        "test_create_unix_server_ssl": needs("unix", "tls"),
        "test_create_unix_server_ssl_verify_failed": needs("unix", "tls"),
        "test_create_unix_server_ssl_verified": needs("unix", "tls"),
        # UDP
        "test_create_datagram_endpoint": needs("udp"),
        "test_create_datagram_endpoint_ipv6": needs("udp"),
        "test_create_datagram_endpoint_sock": needs("udp"),
        # pipes / pty
        "test_read_pipe": needs("pipes"),
        "test_unclosed_pipe_transport": needs("pipes"),
        "test_read_pty_output": needs("pipes"),
        "test_write_pipe": needs("pipes"),
        "test_write_pipe_disconnect_on_close": needs("pipes"),
        "test_write_pty": needs("pipes"),
        "test_bidirectional_pty": needs("pipes"),
        # private internals
        # test_internal_fds skips itself on loops that are not BaseSelectorEventLoop.
    },
    # test.test_asyncio.test_events.SubprocessTestsMixin (14 tests): all need subprocesses.
    "SubprocessTestsMixin": {
        name: needs("subprocess") for name in (
            "test_subprocess_close_after_finish",
            "test_subprocess_close_client_stream",
            "test_subprocess_exec",
            "test_subprocess_exec_invalid_args",
            "test_subprocess_exitcode",
            "test_subprocess_interactive",
            "test_subprocess_kill",
            "test_subprocess_send_signal",
            "test_subprocess_shell",
            "test_subprocess_shell_invalid_args",
            "test_subprocess_stderr",
            "test_subprocess_stderr_redirect_to_stdout",
            "test_subprocess_terminate",
            "test_subprocess_wait_no_same_group",
        )
    },
    # test.test_asyncio.test_sock_lowlevel.BaseSockTestsMixin (13 tests)
    "BaseSockTestsMixin": {
        "test_create_connection_sock": needs("transports"),
    },
    # test.test_asyncio.test_sendfile.SendfileTestsBase (20 tests)
    "SendfileTestsBase": {
        # loop.sock_sendfile itself is baseline, but the receiving side of
        # these tests is a loop.create_server() protocol.
        "test_sock_sendfile_success": needs("transports", note=_SRV),
        "test_sock_sendfile_with_offset_and_count": needs("transports", note=_SRV),
        "test_sock_sendfile_zero_size": needs("transports", note=_SRV),
        "test_sock_sendfile_mix_with_regular_send": needs("transports", note=_SRV),
        "test_sendfile": needs("transports", "sendfile"),
        "test_sendfile_for_closing_transp": needs("transports", "sendfile"),
        "test_sendfile_pre_and_post_data": needs("transports", "sendfile"),
        "test_sendfile_partial": needs("transports", "sendfile"),
        "test_sendfile_close_peer_after_receiving": needs("transports", "sendfile"),
        "test_sendfile_close_peer_in_the_middle_of_receiving": needs("transports", "sendfile"),
        "test_sendfile_prevents_bare_write": needs("transports", "sendfile"),
        "test_sendfile_not_supported": needs("udp", "sendfile"),
        "test_sendfile_ssl": needs("transports", "tls", "sendfile"),
        "test_sendfile_ssl_pre_and_post_data": needs("transports", "tls", "sendfile"),
        "test_sendfile_ssl_partial": needs("transports", "tls", "sendfile"),
        "test_sendfile_ssl_close_peer_after_receiving": needs("transports", "tls", "sendfile"),
        "test_sendfile_force_fallback": needs(
            "transports", "sendfile",),
        "test_sendfile_force_unsupported_native": needs(
            "transports", "sendfile",),
        "test_sendfile_fallback_close_peer_in_the_middle_of_receiving": needs(
            "transports", "sendfile",),
        "test_sendfile_no_fallback_for_fallback_transport": needs("sendfile"),
    },
    # test.test_asyncio.test_server.BaseStartServer (1 test + 1 borrowed, see test_cpython_server.py)
    "BaseStartServer": {
        "test_start_server_1": needs("transports", "streams"),
        "test_start_unix_server_1": needs("unix", "streams"),
    },
    # test.test_asyncio.test_sslproto.BaseStartTLS (11 tests)
    "BaseStartTLS": {
        # test_buf_feed_data only exercises protocols._feed_data_to_buffered_proto.
        "test_start_tls_client_reg_proto_1": needs("transports", "tls"),
        "test_create_connection_memory_leak": needs("transports", "tls"),
        "test_start_tls_client_buf_proto_1": needs("transports", "tls"),
        "test_start_tls_slow_client_cancel": needs("transports", "tls"),
        "test_start_tls_server_1": needs("transports", "tls"),
        "test_start_tls_wrong_args": needs("tls"),
        "test_handshake_timeout": needs("transports", "tls"),
        "test_create_connection_ssl_slow_handshake": needs("transports", "tls"),
        "test_create_connection_ssl_failed_certificate": needs("transports", "tls"),
        "test_start_tls_client_corrupted_ssl": needs("transports", "tls"),
    },
    # test.test_asyncio.test_subprocess.SubprocessMixin (29 tests): all need subprocesses.
    "SubprocessMixin": {
        **{name: needs("subprocess") for name in (
            "test_cancel_make_subprocess_transport_exec",
            "test_cancel_post_init",
            "test_cancel_process_wait",
            "test_close_dont_kill_finished",
            "test_communicate",
            "test_communicate_ignore_broken_pipe",
            "test_create_subprocess_exec_text_mode_fails",
            "test_create_subprocess_exec_with_path",
            "test_create_subprocess_shell_text_mode_fails",
            "test_devnull_error",
            "test_devnull_input",
            "test_devnull_output",
            "test_devstdin_input",
            "test_empty_input",
            "test_kill",
            "test_kill_issue43884",
            "test_pause_reading",
            "test_popen_error",
            "test_popen_error_with_stdin_pipe",
            "test_read_stdout_after_process_exit",
            "test_send_signal",
            "test_shell",
            "test_start_new_session",
            "test_stdin_broken_pipe",
            "test_stdin_not_inheritable",
            "test_stdin_stdout",
            "test_subprocess_communicate_stdout",
            "test_terminate",
        )},
        "test_close_kill_running": needs("subprocess"),
    },
    # test.test_asyncio.test_buffered_proto.BaseTestBufferedProtocol (1 test)
    "BaseTestBufferedProtocol": {
        "test_buffered_proto_create_connection": needs("transports", "streams"),
    },
    # test.test_asyncio.test_streams.StreamTests (67 tests; the StreamReader
    # ones that only need futures and callbacks run today)
    "StreamTests": {
        **{name: needs("transports", "streams") for name in (
            "test_open_connection",
            "test_open_connection_error",
            "test_start_server",
            "test_drain_raises",
            "test_wait_closed_on_close",
            "test_wait_closed_on_close_with_unread_data",
            "test_async_writer_api",
            "test_async_writer_api_exception_after_close",
            "test_eof_feed_when_closing_writer",
            "test_unclosed_resource_warnings",
            "test_loop_is_closed_resource_warnings",
            "test_unhandled_exceptions",
        )},
        "test_open_unix_connection": needs("unix", "streams"),
        "test_open_unix_connection_error": needs("unix", "streams"),
        "test_start_unix_server": needs("unix", "streams"),
        "test_open_connection_no_loop_ssl": needs("transports", "streams", "tls"),
        "test_open_unix_connection_no_loop_ssl": needs("unix", "streams", "tls"),
        "test_start_tls": needs("transports", "streams", "tls"),
        "test_read_all_from_pipe_reader": needs(
            "pipes", "subprocess", "signals", note="(SafeChildWatcher uses SIGCHLD)"),
    },
}


# ---------------------------------------------------------------------------
# Applying the table
# ---------------------------------------------------------------------------

def enabled_tags(asyncio_mode: bool) -> FrozenSet[str]:
    """Tags that do not cause a skip, after the environment overrides."""
    if asyncio_mode:
        # Stock asyncio has every feature and *is* the private internals.
        return frozenset(FEATURES) | {"private", "bug"}
    tags = set(ENABLED_FEATURES)
    spec = os.environ.get(FEATURES_ENV, "").strip()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item == "all":
            tags |= set(FEATURES)
        elif item == "none":
            tags.clear()
        else:
            op, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
            if name not in FEATURES and name not in ("private", "bug"):
                raise ValueError(f"{FEATURES_ENV}: unknown tag {name!r}; "
                                 f"known: {sorted(FEATURES)} + private, bug")
            (tags.add if op == "+" else tags.discard)(name)
    return frozenset(tags)


def skips_disabled() -> bool:
    return os.environ.get(NO_SKIPS_ENV, "").strip() not in ("", "0", "no", "false")


def reason_for(mixin: str, test: str, asyncio_mode: bool) -> Optional[str]:
    entry = SKIPS.get(mixin, {}).get(test)
    if entry is None:
        return None
    if skips_disabled():
        return Skip(platform=entry.platform).reason(()) if entry.platform else None
    return entry.reason(enabled_tags(asyncio_mode))


def apply(cls: type, mixin: str, asyncio_mode: bool) -> Dict[str, str]:
    """Replace skipped tests of ``cls`` by ``unittest.skip`` wrappers.

    CPython's own skip decorators (platform checks) are left untouched: an
    already-skipped test keeps CPython's reason.  Returns {test: reason}.
    """
    applied = {}
    for name in SKIPS.get(mixin, {}):
        func = getattr(cls, name, None)
        if func is None or getattr(func, "__unittest_skip__", False):
            continue
        reason = reason_for(mixin, name, asyncio_mode)
        if reason:
            setattr(cls, name, unittest.skip(reason)(func))
            applied[name] = reason
    return applied


def stale_entries(mixins: Dict[str, type]) -> Dict[str, list]:
    """Entries naming tests that the given mixins do not have."""
    out = {}
    for mixin, tests in SKIPS.items():
        cls = mixins.get(mixin)
        if cls is None:
            out[mixin] = ["<mixin not bound>"]
            continue
        missing = [t for t in tests if not hasattr(cls, t)]
        if missing:
            out[mixin] = missing
    return out
