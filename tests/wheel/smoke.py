"""The wheel test's proof that a built wheel carries the compiled component server: import
``kitex_fast.dapr._h2server``, start ``kitex-fast component --server compiled`` from the installed
wheel, and serve one Invoke (gRPC over HTTP/2 on its Unix socket) to the in-process Kitex test
server. The client is python-hyper's h2 (pure Python, on every platform we build), and the two
protobuf messages are written by hand, so the test needs neither grpcio nor protobuf.

Run by cibuildwheel's test-command (pyproject.toml); exits non-zero with the reason on failure.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import h2.config
import h2.connection
import h2.events

import kitex_fast.dapr._h2server  # noqa: F401  - the compiled server itself, not only its wrapper
from kitex_fast.dapr import h2server
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply

INVOKE = "/dapr.proto.components.v1.OutputBinding/Invoke"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def invoke_request(data: bytes, metadata: dict, operation: str) -> bytes:
    """dapr.proto.components.v1.InvokeRequest: data 1, metadata 2 (map<string,string>), operation 3."""
    body = _field(1, data)
    for key, value in metadata.items():
        body += _field(2, _field(1, key.encode()) + _field(2, value.encode()))
    return body + _field(3, operation.encode())


def response_data(message: bytes) -> bytes:
    """Field 1 (data) of an InvokeResponse."""
    i = 0
    while i < len(message):
        key = 0
        shift = 0
        while True:
            b = message[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        assert key & 7 == 2, "unexpected wire type in InvokeResponse"
        length = 0
        shift = 0
        while True:
            b = message[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if key >> 3 == 1:
            return message[i:i + length]
        i += length
    return b""


def call(path: str, request: bytes) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", INVOKE),
                            (":authority", "kitex"), ("content-type", "application/grpc"), ("te", "trailers"),
                            ("x-component-instance", "wheel-test")])
    conn.send_data(sid, b"\x00" + struct.pack(">I", len(request)) + request, end_stream=True)
    sock.sendall(conn.data_to_send())
    body = b""
    status = None
    try:
        while status is None:
            data = sock.recv(65536)
            if not data:
                raise AssertionError("the compiled server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
                    status = dict(event.headers)
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    assert status.get("grpc-status") == "0", status
    assert body[:1] == b"\x00" and struct.unpack(">I", body[1:5])[0] == len(body) - 5, body[:16]
    return response_data(body[5:])


def main() -> int:
    why_not = h2server.unavailable()
    assert why_not is None, why_not
    with tempfile.TemporaryDirectory(prefix="kf-wheel-") as d, \
            KitexTestServer({"echo": echo_handler}, service="echo") as server:
        folder = os.path.join(d, "sockets")
        log_path = os.path.join(d, "component.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "kitex_fast.dapr", "--server", "compiled",
                                     "--socket-folder", folder, "--log-level", "info"], stdout=log, stderr=log)
        try:
            path = os.path.join(folder, "kitex.sock")
            deadline = time.monotonic() + 60
            while "serving bindings.kitex" not in open(log_path, encoding="utf-8", errors="replace").read():
                assert proc.poll() is None and time.monotonic() < deadline, open(log_path).read()
                time.sleep(0.05)
            log_text = open(log_path, encoding="utf-8", errors="replace").read()
            assert "server compiled" in log_text, log_text
            request = invoke_request(echo_request("wheel"), {
                "hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}, "get")
            reply = call(path, request)
            assert read_echo_reply(reply) == "wheel,hi Kitex", reply
        finally:
            proc.terminate()
            code = proc.wait(30)
        assert code == 0, (code, open(log_path).read())
    print("wheel smoke: the compiled component server served one call:", kitex_fast.dapr._h2server.__file__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
