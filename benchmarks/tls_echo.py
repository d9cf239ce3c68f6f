#!/usr/bin/env python3
"""TLS echo throughput: ringline vs asyncio vs uvloop, driven by a C client.

    python benchmarks/tls_echo.py                      # 1 KiB x 64 connections, 3 reps
    python benchmarks/tls_echo.py --servers asyncio-tls,uvloop-tls,ringline-tls,ringline-tls-streams \\
           --size 1024,16384 --conns 1,64 --reps 5

A server is LOOP-API with API ``tls`` (an asyncio.Protocol echo behind
loop.create_server(ssl=...)) or ``tls-streams`` (asyncio.start_server(ssl=...) with
read/write/drain); see echo_server.py.  The certificate is a self-signed ECDSA P-256 one
made once with the openssl command (benchmarks/.build/echo-cert.pem).  The client is
loadgen -t (loadgen.c built with -DWITH_TLS: epoll + OpenSSL, TLS 1.3, one request in
flight per connection, handshakes done before the warm-up), pinned to --client-cpu; the
servers are pinned to
--server-cpu.  Everything else (verification, interleaved repetitions, server CPU from
/proc, disturbance checks, the report) is run_echo.py's.

RINGLINE_BACKEND=poll in the environment runs ringline's servers on the poll backend.
"""
import sys

import _gen_echo

if __name__ == "__main__":
    sys.exit(_gen_echo.main("tls", __doc__))
