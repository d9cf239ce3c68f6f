"""ringline.Config: defaults and validate() (issue 6)."""

from __future__ import annotations

import ssl

import pytest

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")


def test_defaults():
    c = ringline.Config()
    assert (c.sq_entries, c.ring_size, c.buffer_size) == (256, 64, 131072)
    assert (c.workers, c.pin_to_core, c.core_offset) == (0, True, 0)
    assert (c.backlog, c.tcp_nodelay) == (1024, True)
    assert c.max_connections > 0 and c.send_pool_slots > 0 and c.send_slot_size > 0
    assert c.tick_interval > 0
    assert c.resolver_threads > 0 and c.spawner_threads > 0 and c.blocking_threads > 0
    assert c.tls is None and c.tls_client is None
    assert c.udp_ring_size > 0 and c.udp_buffer_size > 0 and c.udp_send_slots > 0
    assert c.validate() is c


@pytest.mark.parametrize("field, value, words", [
    ("sq_entries", 100, "power of two"),
    ("sq_entries", 0, "power of two"),
    ("cq_entries", 128, "at least sq_entries"),
    ("ring_size", 3, "power of two"),
    ("ring_size", 65536, "power of two in 1..32768"),
    ("buffer_size", 0, "64..1048576"),
    ("workers", -1, "0 (one per CPU)"),
    ("core_offset", -2, "0 or more"),
    ("backlog", 0, "1..65535"),
    ("max_connections", 0, "at least 1"),
    ("send_pool_slots", 0, "zero-sized send pool"),
    ("send_slot_size", 8, "64..16777216"),
    ("tick_interval", 0, "greater than 0"),
    ("tick_interval", "1", "number of seconds"),
    ("resolver_threads", -1, "0 disables resolve()"),
    ("blocking_threads", 5000, "0..1024"),
    ("spawner_threads", 0, "zero-sized spawner pool"),
    ("udp_ring_size", 6, "power of two"),
    ("udp_send_slots", 0, "zero-sized UDP send pool"),
    ("worker_mode", "fibers", "'process' or 'thread'"),
    ("backend", "kqueue", "'io_uring' or 'poll'"),
    ("tls", "cert.pem", "ssl.SSLContext"),
    ("pin_to_core", 1, "bool"),
    ("workers", 1.5, "must be an int"),
])
def test_validate_names_field_and_rule(field, value, words):
    c = ringline.Config(**{field: value})
    with pytest.raises(ValueError) as ei:
        c.validate()
    msg = str(ei.value)
    assert msg.startswith(f"Config.{field} ")
    assert words in msg
    assert repr(value) in msg or field == "tls"


def test_zero_sized_pools_allowed_where_they_mean_disabled():
    ringline.Config(resolver_threads=0, blocking_threads=0,
                    send_zc_threshold=0, shutdown_timeout=0).validate()


def test_server_tls_context_must_be_server_side():
    with pytest.raises(ValueError, match="Config.tls .*server-side"):
        ringline.Config(tls=ssl.create_default_context()).validate()
    ringline.Config(tls=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
                    tls_client=ssl.create_default_context()).validate()


def test_launch_validates():
    with pytest.raises(ValueError, match="Config.ring_size"):
        ringline.Builder(ringline.Config(ring_size=5)).bind(("127.0.0.1", 0)).launch(ringline.Handler)


def test_replace():
    c = ringline.Config(workers=3)
    d = c.replace(buffer_size=4096)
    assert (d.workers, d.buffer_size, c.buffer_size) == (3, 4096, 131072)
