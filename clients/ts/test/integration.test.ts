// The TypeScript client against a real goomerang server (the lab server, built from this workspace).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { create } from "@bufbuild/protobuf";
import { Code, GoomerangError } from "@goomerang/client";
import type { Client, MethodDesc } from "@goomerang/client";

import { EchoReplySchema, EchoRequestSchema, NoteSchema } from "./gen/lab/v1/lab_pb.js";
import { Lab, LabClient, registerMember } from "./gen/lab/v1/lab_goomerang.js";
import { client, eventually, next, reaches, startLab } from "./helpers.js";
import type { Lab as LabServer } from "./helpers.js";

/** Asserts that `promise` rejects with a GoomerangError of `code`; returns it. */
async function rejectsWith(promise: Promise<unknown>, code: Code): Promise<GoomerangError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof GoomerangError, `not a GoomerangError: ${String(err)}`);
    assert.equal(err.codeName, Code[code], err.message);
    return err;
  }
  assert.fail(`resolved instead of failing with ${Code[code]}`);
}

describe("against the lab server", { timeout: 60_000 }, () => {
  let server: LabServer;
  const clients: Client[] = [];
  const connect = async (options: Parameters<typeof client>[1] = {}) => {
    const c = client(server.url, options);
    clients.push(c);
    await c.connect();
    return c;
  };

  before(async () => {
    server = await startLab();
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.stop();
  });

  test("request/reply is routed by method, with headers both ways", async () => {
    const c = await connect();
    const lab = new LabClient(c);
    const echoed = await lab.echo({ text: "hi" }, { headers: { "x-trace": "t1" } });
    assert.equal(echoed.text, "hi");
    assert.equal(echoed.method, "lab.v1.Lab/Echo");
    assert.equal(echoed.headers["x-trace"], "t1");
    const shouted = await lab.shout({ text: "hi" });
    assert.equal(shouted.text, "HI");
    assert.equal(shouted.method, "lab.v1.Lab/Shout");
    const full = await c.call(Lab.methods.echo, { text: "h" });
    assert.equal(full.headers["x-lab"], "echoed");
    assert.equal(full.metadata.type, "lab.v1.EchoReply");
  });

  test("a failed call carries the server's status code and message", async () => {
    const lab = new LabClient(await connect());
    const err = await rejectsWith(lab.echo({ text: "x", failCode: Code.NOT_FOUND }), Code.NOT_FOUND);
    assert.equal(err.rawMessage, "failed on purpose: x");
  });

  test("a method the server lacks is UNIMPLEMENTED, naming it", async () => {
    const c = await connect();
    const missing: MethodDesc<typeof EchoRequestSchema, typeof EchoReplySchema> = {
      name: "lab.v1.Lab/Missing",
      input: EchoRequestSchema,
      output: EchoReplySchema,
      oneWay: false,
    };
    const err = await rejectsWith(c.request(missing, { text: "x" }), Code.UNIMPLEMENTED);
    assert.match(err.rawMessage, /lab\.v1\.Lab\/Missing/);
  });

  test("the deadline reaches the Rust handler, which is cancelled when it passes", async () => {
    const lab = new LabClient(await connect());
    await rejectsWith(lab.slow({ key: "deadline" }, { timeoutMs: 300 }), Code.DEADLINE_EXCEEDED);
    const state = await lab.slowStatus({ key: "deadline" });
    assert.ok(state.started);
    assert.ok(state.timeoutMs > 0 && state.timeoutMs <= 300, `the server saw ${state.timeoutMs}ms`);
    await eventually(async () => (await lab.slowStatus({ key: "deadline" })).cancelled, "the handler was cancelled");
  });

  test("aborting a call sends CANCEL: the Rust handler stops", async () => {
    const lab = new LabClient(await connect());
    const abort = new AbortController();
    const call = lab.slow({ key: "abort" }, { signal: abort.signal, timeoutMs: 30_000 });
    await eventually(async () => (await lab.slowStatus({ key: "abort" })).started, "the handler started");
    abort.abort();
    await rejectsWith(call, Code.CANCELLED);
    await eventually(async () => (await lab.slowStatus({ key: "abort" })).cancelled, "the handler was cancelled");
  });

  test("one-way sends arrive in order before a later request", async () => {
    const lab = new LabClient(await connect());
    const before = (await lab.posted({})).n;
    for (let i = 0; i < 3; i++) await lab.post({ text: `note ${i}` });
    assert.equal((await lab.posted({})).n, before + 3);
  });

  test("the server calls the client: a request and a one-way message", async () => {
    const c = client(server.url);
    clients.push(c);
    let told: (text: string) => void = () => {};
    registerMember(c, {
      ask: (question, ctx) => ({ text: `${question.text}? yes (${ctx.metadata.method})` }),
      tell: (note) => told(note.text),
    });
    await c.connect();
    const lab = new LabClient(c);
    const answer = await lab.askMe({ text: "ready" });
    assert.equal(answer.text, "ready? yes (lab.v1.Member/Ask)");
    const heard = next<string>((deliver) => (told = deliver));
    await lab.tellMe({ text: "psst" });
    assert.equal(await heard, "psst");
  });

  test("publish reaches subscribers with the topic; unsubscribe stops it", async () => {
    const publisher = await connect();
    const subscriber = client(server.url);
    clients.push(subscriber);
    const seen: string[] = [];
    let notify: () => void = () => {};
    subscriber.onMessage(NoteSchema, (note, ctx) => {
      seen.push(`${ctx.metadata.topic}:${note.text}`);
      notify();
    });
    await subscriber.connect();
    await subscriber.subscribe("room.*");
    await subscriber.subscribe("sentinel");
    const arrived = (count: number) =>
      next<void>((deliver) => {
        notify = () => seen.length >= count && deliver();
        notify();
      });
    await publisher.publish("room.1", NoteSchema, { text: "one" });
    await arrived(1);
    await subscriber.unsubscribe("room.*");
    await publisher.publish("room.1", NoteSchema, { text: "dropped" });
    await publisher.publish("sentinel", NoteSchema, { text: "end" });
    await arrived(2);
    assert.deepEqual(seen, ["room.1:one", "sentinel:end"]);
  });

  test("a queue group shares messages among its members", async () => {
    const publisher = await connect();
    const counts = [0, 0];
    let total = 0;
    let notify: () => void = () => {};
    for (const i of [0, 1]) {
      const member = client(server.url);
      clients.push(member);
      member.onMessage(NoteSchema, () => {
        counts[i]! += 1;
        total += 1;
        notify();
      });
      await member.connect();
      await member.subscribe("jobs.>", { group: "workers" });
    }
    const all = next<void>((deliver) => (notify = () => total === 4 && deliver()));
    for (let i = 0; i < 4; i++) await publisher.publish(`jobs.${i}`, NoteSchema, { text: `job ${i}` });
    await all;
    assert.deepEqual(counts, [2, 2]);
  });

  test("broadcast reaches every connection, the sender's included", async () => {
    const a = client(server.url);
    const b = client(server.url);
    clients.push(a, b);
    const heardA = next<string>((deliver) => a.onMessage(NoteSchema, (n) => deliver(n.text)));
    const heardB = next<string>((deliver) => b.onMessage(NoteSchema, (n) => deliver(n.text)));
    await a.connect();
    await b.connect();
    await a.broadcast(NoteSchema, create(NoteSchema, { text: "all" }));
    assert.equal(await heardA, "all");
    assert.equal(await heardB, "all");
  });

  test("a token refused by the server's handshake hook fails connect, by query or subprotocol", async () => {
    await rejectsWith(client(server.url, { query: { token: "bad" } }).connect(), Code.UNAVAILABLE);
    await rejectsWith(client(server.url, { subprotocols: ["token.bad"] }).connect(), Code.UNAVAILABLE);
    const ok = await connect({ query: { token: "good" }, subprotocols: ["token.good"] });
    assert.equal((await new LabClient(ok).echo({ text: "in" })).text, "in");
  });

  test("while disconnected, calls fail fast or wait, as chosen", async () => {
    const c = client(server.url, { reconnect: false });
    await rejectsWith(new LabClient(c).echo({ text: "x" }), Code.UNAVAILABLE);
  });
});

describe("history and sessions", { timeout: 60_000 }, () => {
  let server: LabServer;
  before(async () => {
    server = await startLab();
  });
  after(async () => {
    await server.stop();
  });

  /** A client recording `text@offset` of each note, and a way to wait for the n-th. */
  const recorder = (options: Parameters<typeof client>[1] = {}) => {
    const c = client(server.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 }, ...options });
    const seen: string[] = [];
    let notify: () => void = () => {};
    c.onMessage(NoteSchema, (note, ctx) => {
      seen.push(`${note.text}@${ctx.metadata.position?.offset ?? "-"}`);
      notify();
    });
    const arrived = (count: number) =>
      next<void>((deliver) => {
        notify = () => seen.length >= count && deliver();
        notify();
      });
    return { c, seen, arrived };
  };

  test("messages carry positions; a client that reconnects gets what it missed, once and in order", async () => {
    const publisher = client(server.url);
    const { c, seen, arrived } = recorder();
    const lost: string[] = [];
    c.onUnrecoverable((topic) => lost.push(topic));
    try {
      await publisher.connect();
      await c.connect();
      await c.subscribe("hist.room");
      assert.equal(c.position("hist.room")?.offset, 0n);
      await publisher.publish("hist.room", NoteSchema, { text: "1" });
      await arrived(1);
      const epoch = c.position("hist.room")?.epoch;
      assert.ok(epoch);
      // Kicked: while it reconnects, 2 and 3 are published.
      await new LabClient(c).kick({});
      await reaches(c, "reconnecting");
      await publisher.publish("hist.room", NoteSchema, { text: "2" });
      await publisher.publish("hist.room", NoteSchema, { text: "3" });
      await arrived(3);
      await reaches(c, "open");
      await publisher.publish("hist.room", NoteSchema, { text: "4" });
      await arrived(4);
      assert.deepEqual(seen, ["1@1", "2@2", "3@3", "4@4"]);
      assert.deepEqual(c.position("hist.room"), { epoch, offset: 4n });
      assert.deepEqual(lost, []);

      // Explicitly, from a saved position, on a new client: 3 and 4 replayed.
      const late = recorder();
      await late.c.connect();
      assert.equal(await late.c.subscribeFrom("hist.room", { epoch, offset: 2n }), "recovered");
      await late.arrived(2);
      assert.deepEqual(late.seen, ["3@3", "4@4"]);
      assert.equal(await late.c.subscribeFrom("hist.room", { epoch: "another", offset: 2n }), "unrecoverable");
      assert.equal(await late.c.subscribeFrom("news.plain", { epoch, offset: 2n }), "no-history");
      late.c.close();
    } finally {
      publisher.close();
      c.close();
    }
  });

  test("a session survives a reconnection; an unknown key is forgotten", async () => {
    const c = client(server.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      await c.connect();
      const lab = new LabClient(c);
      assert.equal(c.sessionKey, undefined);
      assert.equal((await lab.login({ text: "ada" })).text, "ada");
      const key = c.sessionKey as string | undefined;
      assert.equal(key?.length, 64);
      await lab.kick({});
      await reaches(c, "reconnecting");
      await reaches(c, "open");
      assert.equal((await lab.whoAmI({})).text, "ada");
      assert.equal(c.sessionKey, key);

      const stranger = client(server.url, { sessionKey: "0".repeat(64) });
      await stranger.connect();
      assert.equal((await new LabClient(stranger).whoAmI({})).text, "");
      assert.equal(stranger.sessionKey, undefined);
      stranger.close();

      const resumed = client(server.url, { sessionKey: key });
      await resumed.connect();
      assert.equal((await new LabClient(resumed).whoAmI({})).text, "ada");
      resumed.close();
    } finally {
      c.close();
    }
  });
});

describe("reconnection", { timeout: 60_000 }, () => {
  test("after a server restart the client reconnects, renews its subscriptions and runs calls that waited", async () => {
    let server = await startLab();
    const port = server.port;
    const c = client(server.url, { reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
    const failFast = client(server.url, { reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, whileDisconnected: "fail" });
    const heard = new Set<string>();
    let notify: () => void = () => {};
    c.onMessage(NoteSchema, (note) => {
      heard.add(note.text);
      notify();
    });
    try {
      await c.connect();
      await failFast.connect();
      await c.subscribe("news.>");
      await server.stop();
      await reaches(c, "reconnecting");
      await reaches(failFast, "reconnecting");
      await rejectsWith(new LabClient(failFast).echo({ text: "now" }), Code.UNAVAILABLE);
      // Made while disconnected: waits for the connection (the default).
      const waited = new LabClient(c).echo({ text: "waited" }, { timeoutMs: 20_000 });
      server = await startLab({ port });
      assert.equal((await waited).text, "waited");
      await reaches(c, "open");
      // The renewal went out before the call above: it is in place now.
      await new LabClient(c).echo({ text: "sync" });
      const publisher = client(server.url);
      await publisher.connect();
      const got = next<void>((deliver) => {
        notify = () => heard.has("after restart") && deliver();
      });
      await publisher.publish("news.today", NoteSchema, { text: "after restart" });
      await got;
      publisher.close();
    } finally {
      c.close();
      failFast.close();
      await server.stop();
    }
  });

  test("closing the client fails calls waiting for a connection", async () => {
    const server = await startLab();
    const c = client(server.url, { reconnect: { initialDelayMs: 10_000 } });
    await c.connect();
    await server.stop();
    await reaches(c, "reconnecting");
    const waiting = new LabClient(c).echo({ text: "x" }, { timeoutMs: 20_000 });
    c.close();
    await rejectsWith(waiting, Code.UNAVAILABLE);
    assert.equal(c.state, "closed");
  });
});
