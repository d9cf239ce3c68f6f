"""TLS echo server on the runtime API.

    python examples/tls_echo.py --cert cert.pem --key key.pem --port 7443
    openssl s_client -connect 127.0.0.1:7443

Config.tls makes every bind() listener TLS: the worker runs the handshake
(bounded by Config.tls_handshake_timeout) before on_accept, and with_data()
sees plaintext (decrypted into the connection's accumulator -- the kernel's
buffers hold ciphertext).  Without --cert a throwaway self-signed
certificate is made with the openssl command.
"""

import argparse
import os
import ssl
import subprocess
import tempfile

import ringline


class Echo(ringline.Handler):
    async def on_accept(self, conn):
        print("handshake done:", conn.peer_addr, conn.tls_info["version"], conn.tls_info["cipher"][0])

        def echo(view):
            conn.send_nowait(view)
            return len(view)

        while await conn.with_data(echo):
            pass


def self_signed():
    d = tempfile.mkdtemp()
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7443)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    cert, key = (args.cert, args.key) if args.cert else self_signed()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    shutdown, workers = (ringline.Builder(ringline.Config(workers=args.workers, tls=ctx))
                         .bind(("0.0.0.0", args.port))
                         .launch(Echo))
    print(f"TLS echo on :{args.port} ({cert}); Ctrl-C to stop")
    shutdown.wait_on_signal()


if __name__ == "__main__":
    main()
