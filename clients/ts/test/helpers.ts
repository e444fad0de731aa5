// What the Node tests share: the lab server as a child process, a `ws`-backed client, bounded waits.

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

import WebSocket from "ws";

import { Client } from "@goomerang/client";
import type { ClientOptions, WebSocketLike } from "@goomerang/client";

/** The lab server binary (built by `cargo build -p goomerang-lab-server`). */
const LAB_SERVER = process.env.GOOMERANG_LAB_SERVER ?? "../../target/debug/goomerang-lab-server";

/** A running lab server. */
export interface Lab {
  port: number;
  url: string;
  stop(): Promise<void>;
}

/** Starts the lab server (on `port`, or an ephemeral one) and resolves once it listens. */
export function startLab(options: { port?: number; staticDir?: string } = {}): Promise<Lab> {
  const args = ["--port", String(options.port ?? 0)];
  if (options.staticDir !== undefined) args.push("--static", options.staticDir);
  const child: ChildProcess = spawn(LAB_SERVER, args, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise<Lab>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the lab server exited with ${code} before listening`)));
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      const match = /^LISTENING (\d+)$/.exec(line);
      if (match === null) return;
      const port = Number(match[1]);
      resolve({
        port,
        url: `ws://127.0.0.1:${port}/ws`,
        stop: () =>
          new Promise<void>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done();
            child.once("exit", () => done());
            child.kill("SIGKILL");
          }),
      });
    });
  });
}

/** A client for `url` on `ws`'s WebSocket (Node 20 has no global one). */
export function client(url: string, options: Partial<ClientOptions> = {}): Client {
  return new Client({ url, WebSocket: WebSocket as unknown as WebSocketLike, ...options });
}

/** Resolves with the first value `register` delivers, failing after `ms`. */
export function next<T>(register: (deliver: (value: T) => void) => void, ms = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nothing arrived within ${ms}ms`)), ms);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Resolves when `client` reaches `state`. */
export function reaches(client: Client, state: Client["state"], ms = 10000): Promise<void> {
  if (client.state === state) return Promise.resolve();
  return next<void>((deliver) => {
    const off = client.onState((now) => {
      if (now === state) {
        off();
        deliver();
      }
    });
  }, ms);
}

/** Polls `probe` until it returns true (each poll a round trip to the server), at most `tries` times. */
export async function eventually(probe: () => Promise<boolean>, what: string, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await probe()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}
