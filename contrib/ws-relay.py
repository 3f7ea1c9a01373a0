#!/usr/bin/python3
"""Relay plain TCP clients to aviaryd's WebSocket listener, for test suites that only speak TCP.

Listens on 127.0.0.1:LISTEN_PORT; every TCP connection gets a WebSocket session
to ws://127.0.0.1:WS_PORT/mqtt (subprotocol mqtt), and the bytes are carried
both ways (TCP bytes become binary frames, frame payloads become TCP bytes).
So a TCP-only MQTT test suite exercises the broker's WebSocket path. Runs
until interrupted.

    contrib/ws-relay.py LISTEN_PORT WS_PORT
"""

import base64
import os
import socket
import struct
import sys
import threading

HOST = "127.0.0.1"


def ws_open(port):
    s = socket.create_connection((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /mqtt HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: mqtt\r\n\r\n" % (HOST, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed during the WebSocket handshake")
        buf += chunk
    if b" 101 " not in buf.split(b"\r\n")[0]:
        raise OSError("handshake refused: %r" % buf[:80])
    return s, buf.split(b"\r\n\r\n", 1)[1]


def frame(data, opcode=2):
    mask = os.urandom(4)
    n = len(data)
    first = 0x80 | opcode
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else (
        struct.pack("!BBH", first, 0x80 | 126, n) if n < 65536 else
        struct.pack("!BBQ", first, 0x80 | 127, n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def tcp_to_ws(tcp, ws, state):
    """The client's bytes become binary frames. After the broker's side has closed, what
    the client still sends is read and dropped, as a TCP broker's drain would; at the
    client's end the WebSocket gets a close frame."""
    while True:
        try:
            data = tcp.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        if not state["ws_closed"]:
            try:
                ws.sendall(frame(data))
            except OSError:
                state["ws_closed"] = True
    if not state["ws_closed"]:
        try:
            ws.sendall(frame(struct.pack("!H", 1000), opcode=8))
            ws.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    tcp.close()


def ws_to_tcp(ws, buf, tcp, state):
    try:
        while True:
            while len(buf) < 2:
                chunk = ws.recv(65536)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            n, hl = buf[1] & 0x7F, 2
            if n == 126:
                hl = 4
            elif n == 127:
                hl = 10
            while len(buf) < hl:
                buf += ws.recv(65536)
            if n == 126:
                n = struct.unpack("!H", buf[2:4])[0]
            elif n == 127:
                n = struct.unpack("!Q", buf[2:10])[0]
            while len(buf) < hl + n:
                chunk = ws.recv(65536)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            opcode, payload, buf = buf[0] & 0x0F, buf[hl:hl + n], buf[hl + n:]
            if opcode == 8:
                break
            if opcode in (0, 2):
                tcp.sendall(payload)
    except OSError:
        pass
    # The broker's side has ended: the client reads the end of the stream, like over TCP.
    state["ws_closed"] = True
    try:
        tcp.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    ws.close()


def main():
    listen_port, ws_port = int(sys.argv[1]), int(sys.argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, listen_port))
    server.listen(64)
    print("relaying tcp://%s:%d to ws://%s:%d/mqtt" % (HOST, server.getsockname()[1], HOST,
                                                      ws_port), flush=True)
    while True:
        tcp, _ = server.accept()
        try:
            ws, rest = ws_open(ws_port)
        except OSError:
            tcp.close()
            continue
        state = {"ws_closed": False}
        threading.Thread(target=tcp_to_ws, args=(tcp, ws, state), daemon=True).start()
        threading.Thread(target=ws_to_tcp, args=(ws, rest, tcp, state), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
