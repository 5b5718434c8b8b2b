"""kitex_fast.dapr.eventloop: the component's event loops load without Python's ssl module, work
as usual for plain sockets, refuse TLS with a clear error, and leave ``import ssl`` to the real
module afterwards. Each case runs in a fresh interpreter: pytest's own process has ssl loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# An echo over a socketpair on the loop, then TLS asked of the same loop, then the real ssl.
SCRIPT = textwrap.dedent("""
    import socket, sys
    from kitex_fast.dapr import eventloop
    {load}
    assert "ssl" not in sys.modules and "_ssl" not in sys.modules, "ssl loaded"
    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        b.setblocking(False)
        writer.write(b"ping")
        await writer.drain()
        assert await loop.sock_recv(b, 4) == b"ping"
        await loop.sock_sendall(b, b"pong")
        assert await reader.readexactly(4) == b"pong"
        writer.close()
        b.close()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.open_connection("127.0.0.1", port, ssl=True)
        except Exception as exc:
            print("TLS:", type(exc).__name__, exc)
        else:
            print("TLS: no error")
        server.close()

    {run}
    assert "ssl" not in sys.modules, "the loop's work loaded ssl"
    import ssl
    print("real ssl:", ssl.OPENSSL_VERSION.split()[0])
""")


def _run(load: str, run: str) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(load=load, run=run)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    return out


def test_asyncio_without_ssl_serves_sockets_and_refuses_tls() -> None:
    out = _run("eventloop.import_asyncio()", "asyncio.run(main())")
    assert "TLS: RuntimeError" in out and "ssl module not available" in out, out
    assert "real ssl: OpenSSL" in out, out


def test_uvloop_with_the_stand_in_serves_sockets_and_refuses_tls() -> None:
    pytest.importorskip("uvloop", reason='needs "kitex_fast[uvloop]"')
    out = _run("new_loop = eventloop.import_uvloop()",
               "with asyncio.Runner(loop_factory=new_loop) as runner: runner.run(main())")
    assert "TLS: TLSUnavailableError" in out and "without the ssl module" in out, out
    assert "real ssl: OpenSSL" in out, out


def test_a_process_that_has_ssl_keeps_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import ssl, sys\n"
         "from kitex_fast.dapr import eventloop\n"
         "eventloop.import_asyncio()\n"
         "import asyncio.sslproto\n"
         "assert sys.modules['ssl'] is ssl and asyncio.sslproto.ssl is ssl\n"
         "print('kept')"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60).stdout.decode()
    assert out.strip() == "kept", out
