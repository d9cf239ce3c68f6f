"""Checks of the conformance skip table itself (no event loop involved)."""

import sys

import pytest

import _conformance_skips as skips


def _cpython_classes():
    from test.test_asyncio import (test_buffered_proto, test_events, test_sendfile,
                                   test_server, test_sock_lowlevel, test_sslproto,
                                   test_streams, test_subprocess)
    return {
        "EventLoopTestsMixin": test_events.EventLoopTestsMixin,
        "SubprocessTestsMixin": test_events.SubprocessTestsMixin,
        "BaseSockTestsMixin": test_sock_lowlevel.BaseSockTestsMixin,
        "SendfileTestsBase": test_sendfile.SendfileTestsBase,
        # BaseStartServer plus the borrowed test_start_unix_server_1
        "BaseStartServer": test_server.SelectorStartServerTests,
        "BaseStartTLS": test_sslproto.BaseStartTLS,
        "SubprocessMixin": test_subprocess.SubprocessMixin,
        "BaseTestBufferedProtocol": test_buffered_proto.BaseTestBufferedProtocol,
        "StreamTests": test_streams.StreamTests,
    }


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="the skip table names CPython 3.11's tests")
def test_skip_table_names_existing_tests():
    assert skips.stale_entries(_cpython_classes()) == {}


def test_every_entry_has_a_reason_outside_asyncio_mode():
    for mixin, tests in skips.SKIPS.items():
        for name, entry in tests.items():
            assert entry.all_tags(), f"{mixin}.{name}: entry without any tag"
            for tag in entry.tags:
                assert tag in skips.FEATURES, f"{mixin}.{name}: unknown tag {tag!r}"
            # With nothing enabled, every entry must produce a reason.
            assert entry.reason(()), f"{mixin}.{name}: no reason"


def test_asyncio_mode_skips_only_platform_entries(monkeypatch):
    monkeypatch.delenv(skips.FEATURES_ENV, raising=False)
    monkeypatch.delenv(skips.NO_SKIPS_ENV, raising=False)
    for mixin, tests in skips.SKIPS.items():
        for name, entry in tests.items():
            reason = skips.reason_for(mixin, name, asyncio_mode=True)
            if entry.platform:
                assert reason and reason.startswith("platform:")
            else:
                assert reason is None, f"{mixin}.{name} skipped in asyncio mode: {reason}"


def test_feature_spec_parsing(monkeypatch):
    monkeypatch.setenv(skips.FEATURES_ENV, "none,+transports,tls,-tls,+private")
    assert skips.enabled_tags(False) == {"transports", "private"}
    monkeypatch.setenv(skips.FEATURES_ENV, "all,-udp")
    assert skips.enabled_tags(False) == set(skips.FEATURES) - {"udp"}
    monkeypatch.setenv(skips.FEATURES_ENV, "+nonsense")
    with pytest.raises(ValueError):
        skips.enabled_tags(False)


def test_reason_strings():
    entry = skips.needs("transports", "tls")
    assert entry.reason(()) == "needs transports (issue 3), TLS (issue 5)"
    assert entry.reason({"transports"}) == "needs TLS (issue 5)"
    assert entry.reason({"transports", "tls"}) is None
    assert skips.private("loop._run_once").reason(()) == \
        "mocks asyncio private internals: loop._run_once"
    assert skips.private("loop._run_once").reason({"private"}) is None
