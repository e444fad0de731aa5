// Unit tests: the envelope against frame.proto, the status codes, the backoff, and the client's
// answers to a peer that breaks the protocol (a bare `ws` server plays the peer).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WebSocketServer } from "ws";
import type { WebSocket as PeerSocket } from "ws";

import { Code, GoomerangError, SUBPROTOCOL, backoffDelay, toCode } from "@goomerang/client";
import { FrameKind, FrameSchema } from "../src/gen/goomerang/v1/frame_pb.js";

import { NoteSchema } from "./gen/lab/v1/lab_pb.js";
import { client, next } from "./helpers.js";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("the envelope", () => {
  test("every field of frame.proto has the number the client encodes", () => {
    const proto = readFileSync("../../proto/goomerang/v1/frame.proto", "utf8");
    const body = /message Frame \{([\s\S]*?)\n\}/.exec(proto)?.[1] ?? "";
    const declared = [...body.matchAll(/^\s+[\w.<>, ]+ (\w+) = (\d+);/gm)].map((m) => [m[1]!, Number(m[2])] as const);
    assert.equal(declared.length, 13);
    const encoded = FrameSchema.fields.map((f) => [f.name, f.number] as const);
    assert.deepEqual(new Map(encoded), new Map(declared));
    const kinds = [...proto.matchAll(/FRAME_KIND_(\w+) = (\d+);/g)].map((m) => [m[1]!, Number(m[2])] as const);
    for (const [name, value] of kinds) assert.equal(FrameKind[name as keyof typeof FrameKind], value, String(name));
  });

  test("a request encodes to the bytes PROTOCOL.md describes", () => {
    const frame = create(FrameSchema, {
      kind: FrameKind.REQUEST,
      id: 1n,
      type: "a.B",
      timeoutMs: 5,
      method: "a.S/M",
    });
    // kind=2, id=1, type "a.B", timeout_ms=5, method "a.S/M"
    assert.equal(hex(toBinary(FrameSchema, frame)), "08021001" + "1a03612e42" + "3005" + "5a05612e532f4d");
    const back = fromBinary(FrameSchema, toBinary(FrameSchema, frame));
    assert.equal(back.method, "a.S/M");
    assert.equal(back.id, 1n);
  });

  test("status codes: names, and unknown numbers become UNKNOWN", () => {
    assert.equal(toCode(5), Code.NOT_FOUND);
    assert.equal(toCode(99), Code.UNKNOWN);
    assert.equal(toCode(-1), Code.UNKNOWN);
    const err = new GoomerangError(Code.NOT_FOUND, "no such thing");
    assert.equal(err.message, "NOT_FOUND: no such thing");
    assert.equal(err.codeName, "NOT_FOUND");
    assert.equal(GoomerangError.from(new Error("boom")).code, Code.INTERNAL);
  });

  test("backoff grows, stops at its maximum and jitters within its fraction", () => {
    const options = { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2, jitter: 0.5 };
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10].map((a) => backoffDelay(options, a, () => 0.5)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.equal(backoffDelay(options, 0, () => 0), 50);
    assert.equal(backoffDelay(options, 0, () => 1), 150);
  });
});

/** A bare WebSocket peer speaking goomerang.v1 by hand; `onConnection` gets each socket. */
async function peer(onConnection: (socket: PeerSocket) => void): Promise<{ url: string; close: () => void }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => SUBPROTOCOL });
  server.on("connection", onConnection);
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return { url: `ws://127.0.0.1:${port}/ws`, close: () => server.close() };
}

const encode = (init: Parameters<typeof create<typeof FrameSchema>>[1]) => toBinary(FrameSchema, create(FrameSchema, init));

describe("a peer that breaks the protocol", { timeout: 20_000 }, () => {
  for (const [what, send, code] of [
    ["a text message", (s: PeerSocket) => s.send("hello"), 1003],
    ["an undecodable frame", (s: PeerSocket) => s.send(Buffer.from([0xff, 0xff, 0xff])), 1007],
    ["a REQUEST with id 0", (s: PeerSocket) => s.send(encode({ kind: FrameKind.REQUEST, id: 0n, type: "x" })), 1002],
    ["a MESSAGE with an id", (s: PeerSocket) => s.send(encode({ kind: FrameKind.MESSAGE, id: 3n, type: "x" })), 1002],
    ["a client-to-server kind", (s: PeerSocket) => s.send(encode({ kind: FrameKind.PUBLISH, topic: "t" })), 1002],
  ] as const) {
    test(`${what} gets close ${code}`, async () => {
      let closed: (code: number) => void = () => {};
      const got = next<number>((deliver) => (closed = deliver));
      const fake = await peer((socket) => {
        socket.on("close", (c) => closed(c));
        send(socket);
      });
      const c = client(fake.url, { reconnect: false });
      await c.connect();
      assert.equal(await got, code);
      c.close();
      fake.close();
    });
  }

  test("a REQUEST reusing an id in flight gets close 1002 and neither is answered", async () => {
    const frames: number[] = [];
    let closed: (code: number) => void = () => {};
    const got = next<number>((deliver) => (closed = deliver));
    const fake = await peer((socket) => {
      socket.on("message", (data) => frames.push(fromBinary(FrameSchema, new Uint8Array(data as Buffer)).kind));
      socket.on("close", (c) => closed(c));
      const request = encode({ kind: FrameKind.REQUEST, id: 7n, type: "lab.v1.Note", method: "lab.v1.Member/Hold" });
      socket.send(request);
      socket.send(request);
    });
    const c = client(fake.url, { reconnect: false });
    c.handle(
      { name: "lab.v1.Member/Hold", input: NoteSchema, output: NoteSchema, oneWay: false },
      (_note, ctx) =>
        new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve({ text: "late" }))),
    );
    await c.connect();
    assert.equal(await got, 1002);
    assert.deepEqual(frames, [], "no REPLY or ERROR for either request");
    fake.close();
  });

  test("an ERROR with id 0 is reported to onError with its status", async () => {
    const fake = await peer((socket) =>
      socket.send(
        encode({
          kind: FrameKind.ERROR,
          id: 0n,
          type: "lab.v1.Note",
          method: "lab.v1.Lab/Nope",
          status: { code: Code.UNIMPLEMENTED, message: "no handler" },
        }),
      ),
    );
    const c = client(fake.url, { reconnect: false });
    const reported = next<GoomerangError>((deliver) => c.onError(deliver));
    await c.connect();
    const err = await reported;
    assert.equal(err.code, Code.UNIMPLEMENTED);
    assert.match(err.rawMessage, /lab\.v1\.Lab\/Nope/);
    c.close();
    fake.close();
  });

  test("a REPLY of the wrong type fails the call with INTERNAL", async () => {
    const fake = await peer((socket) =>
      socket.on("message", (data) => {
        const frame = fromBinary(FrameSchema, new Uint8Array(data as Buffer));
        socket.send(encode({ kind: FrameKind.REPLY, id: frame.id, type: "other.Type" }));
      }),
    );
    const c = client(fake.url, { reconnect: false });
    await c.connect();
    await assert.rejects(
      c.request({ name: "lab.v1.Lab/Echo", input: NoteSchema, output: NoteSchema, oneWay: false }, { text: "x" }),
      (err: unknown) => err instanceof GoomerangError && err.code === Code.INTERNAL,
    );
    c.close();
    fake.close();
  });
});

describe("keepalive probes", { timeout: 20_000 }, () => {
  /** A peer that answers probes (UNSUBSCRIBE with an id) if `answer`, and reports each. */
  const prober = (answer: boolean, onProbe: (frame: ReturnType<typeof fromBinary<typeof FrameSchema>>) => void) =>
    peer((socket) =>
      socket.on("message", (data) => {
        const frame = fromBinary(FrameSchema, new Uint8Array(data as Buffer));
        if (frame.kind !== FrameKind.UNSUBSCRIBE) return;
        onProbe(frame);
        if (answer) socket.send(encode({ kind: FrameKind.REPLY, id: frame.id }));
      }),
    );

  test("a silent server is dropped after the interval and the timeout", async () => {
    const probes: string[] = [];
    const fake = await prober(false, (frame) => probes.push(`${frame.id}:${frame.topic}`));
    const c = client(fake.url, { reconnect: false, keepalive: { intervalMs: 50, timeoutMs: 50 } });
    await c.connect();
    await next<void>((deliver) => c.onState((state) => state === "closed" && deliver()));
    assert.ok(probes.length >= 1, "a probe went out first");
    assert.match(probes[0]!, /^[1-9]\d*:goomerang\.keepalive\.probe$/);
    fake.close();
  });

  test("a server that answers the probes keeps the connection", async () => {
    let answered = 0;
    let third: () => void = () => {};
    const fake = await prober(true, () => {
      answered += 1;
      if (answered === 3) third();
    });
    const c = client(fake.url, { reconnect: false, keepalive: { intervalMs: 30, timeoutMs: 30 } });
    const states: string[] = [];
    c.onState((state) => states.push(state));
    await c.connect();
    await next<void>((deliver) => (third = deliver));
    assert.equal(c.state, "open");
    assert.deepEqual(states, ["connecting", "open"], "never dropped between probes");
    c.close();
    fake.close();
  });
});
