"""Helpers for the runtime API tests (tests/test_runtime_*.py)."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import ssl
import subprocess
import tempfile

import pytest


@contextlib.contextmanager
def launched(handler, backend, *, tcp=True, unix=None, udp=None, **cfg):
    """Launch handler on loopback; yields (shutdown_handle, workers)."""
    import ringline
    cfg.setdefault("workers", 1)
    cfg.setdefault("worker_mode", "thread")
    cfg.setdefault("shutdown_timeout", 1.0)
    cfg.setdefault("pin_to_core", False)
    b = ringline.Builder(ringline.Config(backend=backend, **cfg))
    if tcp:
        b.bind(("127.0.0.1", 0))
    if unix:
        b.bind_unix(unix)
    if udp:
        b.bind_udp(("127.0.0.1", 0))
    sh, workers = b.launch(handler)
    try:
        yield sh, workers
    finally:
        sh.shutdown(timeout=15)


def client(addr, timeout=10.0):
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_all(sock):
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk


def get(q: queue.Queue, timeout=10.0):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("the handler reported nothing in time") from None


@contextlib.contextmanager
def short_tmpdir():
    d = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


_CERT = None


def cert_files():
    """(certfile, keyfile) of a self-signed certificate for localhost."""
    global _CERT
    if _CERT is not None:
        return _CERT
    d = tempfile.mkdtemp(prefix="rl-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if shutil.which("openssl"):
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", key, "-out", cert], capture_output=True)
        if r.returncode == 0:
            _CERT = (cert, key)
            return _CERT
    import test
    kc = os.path.join(os.path.dirname(test.__file__), "certdata", "keycert.pem")
    if not os.path.exists(kc):
        pytest.skip("no openssl and no CPython test certificate to run TLS tests with")
    _CERT = (kc, kc)
    return _CERT


def tls_contexts():
    cert, key = cert_files()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client
