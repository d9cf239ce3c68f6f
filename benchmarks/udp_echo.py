#!/usr/bin/env python3
"""UDP echo throughput: ringline vs asyncio vs uvloop, driven by a C client.

    python benchmarks/udp_echo.py                      # 1 KiB datagrams x 64 flows, 3 reps
    python benchmarks/udp_echo.py --size 64,1024,8192 --conns 1,64 --reps 5

The server (echo_server.py --api udp) is a DatagramProtocol on
loop.create_datagram_endpoint that sends every datagram back to its sender (4 MiB
socket buffers for every loop).  The client is loadgen -u (loadgen.c): CONNS flows, each a
connected UDP socket with one datagram in flight; a datagram not echoed within 200 ms
counts as lost and the flow goes on (lost datagrams are reported, and never counted as
requests).  Pinning, verification, interleaved repetitions, server CPU from /proc,
disturbance checks and the report are run_echo.py's.

RINGLINE_BACKEND=poll in the environment runs ringline's server on the poll backend.
"""
import sys

import _gen_echo

if __name__ == "__main__":
    sys.exit(_gen_echo.main("udp", __doc__))
