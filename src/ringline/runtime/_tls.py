"""TLS for ConnCtx: an ssl.SSLObject over memory BIOs, driven by the core.

The compiled core feeds received ciphertext into the incoming BIO and
decrypts into the connection's accumulator (so with_data() sees plaintext,
always copied: the kernel's buffers hold ciphertext); sends are encrypted
and the outgoing BIO's bytes queued in order.  This module drives the
handshake and describes the session.
"""

from __future__ import annotations

import asyncio
import ssl

__all__ = ("handshake", "info")


async def handshake(conn, context: ssl.SSLContext, *, server_side: bool,
                    server_hostname: str | None = None, timeout: float | None = None):
    incoming = ssl.MemoryBIO()
    outgoing = ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_side=server_side,
                              server_hostname=server_hostname)
    conn._tls_setup(sslobj, incoming, outgoing)
    conn._sslobj = sslobj
    async with asyncio.timeout(timeout):
        while True:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn._tls_flush()
                if conn._tls_input_ended:
                    raise ConnectionResetError(
                        "the connection closed during the TLS handshake") from None
                await conn._tls_raw_wait()
    conn._tls_flush()
    conn._tls_established()


def info(sslobj) -> dict | None:
    if sslobj is None:
        return None
    try:
        peercert = sslobj.getpeercert()
    except (ValueError, ssl.SSLError):
        peercert = None
    return {
        "version": sslobj.version(),
        "cipher": sslobj.cipher(),
        "alpn_protocol": sslobj.selected_alpn_protocol(),
        "server_hostname": sslobj.server_hostname,
        "server_side": sslobj.server_side,
        "peercert": peercert,
    }
