"""A goomerang client written with Python's `websockets` library, from PROTOCOL.md alone.

Run by tests/interop_python.rs against a server that answers `test.v1.Ping`
requests with a `test.v1.Pong` echoing them and takes `test.v1.Note` one-way
messages. It checks the server's WebSocket framing against an independent
implementation: the subprotocol, fragmented and large messages both ways,
pipelined requests, ping/pong and the close codes. Frames are encoded and read
by hand (protobuf varints and length-delimited fields), as PROTOCOL.md says.
Prints one line per check; exits non-zero on the first failure.
"""

import asyncio
import sys

import websockets

MESSAGE, REQUEST, REPLY, ERROR = 1, 2, 3, 4


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def read_varint(buf, i):
    value, shift = 0, 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def parse(buf):
    """The fields of a protobuf message: number -> int or bytes (the last occurrence)."""
    i, out = 0, {}
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            out[number] = bytes(buf[i : i + n])
            i += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def ping(request_id, n, text):
    """A REQUEST frame carrying test.v1.Ping {n, text}."""
    payload = field(1, n) + field(2, text)
    return field(1, REQUEST) + field(2, request_id) + field(3, b"test.v1.Ping") + field(4, payload)


def note(text):
    """A MESSAGE frame carrying test.v1.Note {text}."""
    return field(1, MESSAGE) + field(3, b"test.v1.Note") + field(4, field(1, text))


def expect_pong(frame, request_id, n, text):
    got = parse(frame)
    assert got.get(1) == REPLY, f"kind {got.get(1)}, expected REPLY: {got}"
    assert got.get(2) == request_id, f"id {got.get(2)}, expected {request_id}"
    assert got.get(3) == b"test.v1.Pong", f"type {got.get(3)!r}"
    pong = parse(got.get(4, b""))
    assert pong.get(1, 0) == n and pong.get(2, b"") == text, f"pong {pong}"


async def main(url):
    async with websockets.connect(url, subprotocols=["goomerang.v1"], max_size=None) as ws:
        assert ws.subprotocol == "goomerang.v1", ws.subprotocol
        print("subprotocol goomerang.v1")

        await ws.send(ping(1, 7, b"hello"))
        expect_pong(await ws.recv(), 1, 7, b"hello")
        print("request and reply")

        # One request in three fragments (a binary frame, then two continuations).
        data = ping(2, 8, b"in fragments")
        await ws.send([data[:3], data[3:9], data[9:]])
        expect_pong(await ws.recv(), 2, 8, b"in fragments")
        print("fragmented request")

        # 1 MiB each way: the reply's frame carries a 64-bit length.
        big = b"x" * (1 << 20)
        await ws.send(ping(3, 9, big))
        expect_pong(await ws.recv(), 3, 9, big)
        print("1 MiB request and reply")

        pong_waiter = await ws.ping(b"abc")
        await asyncio.wait_for(pong_waiter, 10)
        print("ping answered")

        for text in (b"one", b"two", b"three"):
            await ws.send(note(text))
        print("three one-way notes sent")

        # Pipelined: every request answered exactly once, in any order.
        ids = range(100, 400)
        for request_id in ids:
            await ws.send(ping(request_id, request_id * 2, b"p"))
        answered = []
        for _ in ids:
            got = parse(await ws.recv())
            assert got.get(1) == REPLY, got
            assert parse(got[4]).get(1) == got[2] * 2, got
            answered.append(got[2])
        assert sorted(answered) == list(ids), "each id answered once"
        print("300 pipelined requests, each answered once")

        # No handler for the type: an ERROR frame for that id, code 12 (UNIMPLEMENTED).
        await ws.send(field(1, REQUEST) + field(2, 500) + field(3, b"test.v1.Nobody"))
        got = parse(await ws.recv())
        assert got.get(1) == ERROR and got.get(2) == 500, got
        assert parse(got.get(7, b"")).get(1) == 12, got
        print("unknown type answered with ERROR 12")

        # Text frames are not part of the protocol: close 1003.
        await ws.send("text")
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected the server to close")
        except websockets.ConnectionClosedError as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1003, closed.rcvd
        print("text frame closed with 1003")

    # A close from the client is answered with the same code.
    async with websockets.connect(url, subprotocols=["goomerang.v1"]) as ws:
        await ws.close(1000, "bye")
        assert ws.close_code == 1000, ws.close_code
    print("client close 1000 answered with 1000")
    print("ok")


asyncio.run(main(sys.argv[1]))
