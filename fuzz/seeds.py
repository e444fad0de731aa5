"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/seed-*): a few well-formed inputs
for each, from which coverage guidance explores. Run from the repository root:
python3 fuzz/seeds.py (needs grpcio-tools, which scripts/test installs)."""
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value


def write(target, name, data):
    path = os.path.join("fuzz", "corpus", target, f"seed-{name}")
    with open(path, "wb") as f:
        f.write(data)


# Frames: a request by method, a reply, an error with a status, a subscribe, headers.
write("frame", "request", field(1, 2) + field(2, 1) + field(3, b"chat.v1.Hello") + field(4, b"\x0a\x03ada")
      + field(6, 5000) + field(11, b"chat.v1.Greeter/SayHello"))
write("frame", "reply", field(1, 3) + field(2, 1) + field(3, b"chat.v1.HelloReply") + field(4, b"\x0a\x02hi"))
write("frame", "error", field(1, 4) + field(2, 7) + field(7, field(1, 5) + field(2, b"not found")))
write("frame", "subscribe", field(1, 7) + field(2, 2) + field(8, b"chat.*") + field(9, b"workers"))
write("frame", "headers", field(1, 1) + field(3, b"t.N") + field(5, field(1, b"traceparent") + field(2, b"00-ab-cd-01"))
      + field(10, 1700000000000000))

# WebSocket streams: a first byte (bit 0: the client side; bits 1-2: the size limit, 16, 125,
# 1000 or 1 MiB), then frames, masked as a client sends them (unmasked: a server's).
def ws(opcode, payload, fin=True, mask=b"\x12\x34\x56\x78"):
    out = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if len(payload) < 126:
        out.append(bit | len(payload))
    else:
        out.append(bit | 126)
        out += len(payload).to_bytes(2, "big")
    if mask:
        out += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out) + payload


write("websocket", "server", b"\x06" + ws(2, b"frame") + ws(1, b"text", fin=False) + ws(9, b"ping")
      + ws(0, b" more") + ws(2, bytes(300)) + ws(8, (1000).to_bytes(2, "big") + b"bye"))
write("websocket", "client", b"\x07" + ws(2, b"reply", mask=None) + ws(10, b"", mask=None)
      + ws(8, b"", mask=None))
write("websocket", "limit", b"\x00" + ws(2, bytes(10), fin=False) + ws(0, bytes(10)))

# Handshakes: method, URI, then header lines.
write("handshake", "browser", b"GET\n/ws?token=abc&x=%20y\nupgrade: websocket\nconnection: Upgrade\n"
      b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-version: 13\n"
      b"sec-websocket-protocol: goomerang.v1, token.abc\norigin: https://app.example.com\n")
write("handshake", "foreign", b"GET\n/ws\nupgrade: websocket\nconnection: keep-alive, Upgrade\n"
      b"sec-websocket-version: 8\nsec-websocket-protocol: mqtt\n")
write("handshake", "post", b"POST\n/ws?a=1&a=2\nupgrade: h2c\n")

# Topics: pattern, newline, topic.
for name, data in [("star", b"chat.*\nchat.room1"), ("tail", b"chat.>\nchat.room1.typing"),
                   ("exact", b"a.b.c\na.b.c"), ("bad", b"a..b\n.a"), ("mixed", b"*.x.>\ny.x.z.w")]:
    write("topic", name, data)

# A real CodeGeneratorRequest for the fixtures, as protoc sends it.
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "set.pb")
    import grpc_tools
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = ["features.proto", "hazards.proto", "hazards_greeting.proto", "other.proto"]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Itests/fixtures", "-Iproto", f"-I{wkt}",
                    "--include_imports", "--include_source_info", f"--descriptor_set_out={out}", *protos],
                   check=True)
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=protos, parameter="lang=ts")
    request.proto_file.extend(fds.file)
    write("plugin_request", "fixtures-ts", request.SerializeToString())
    request.parameter = ""
    write("plugin_request", "fixtures-rust", request.SerializeToString())
write("plugin_request", "empty", b"")
