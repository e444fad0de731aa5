// The TypeScript client's size and speed: min+gzip bytes of the client (protobuf-es excluded),
// and Node round trips per second against the Rust lab server beside a bare `ws` echo.
// Run after `npm run build` and `cargo build --release -p goomerang-lab-server`:
//   node bench/bench.mjs [--seconds 3] [--runs 5]
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { gzipSync } from "node:zlib";

import { build } from "esbuild";
import WebSocket from "ws";

import { Client } from "../dist/index.js";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const seconds = option("--seconds", 3);
const runs = option("--runs", 5);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

// 1. Size: the whole client, minified, gzipped; protobuf-es is the application's anyway.
const bundle = await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  write: false,
  external: ["@bufbuild/protobuf", "@bufbuild/protobuf/*"],
});
const code = bundle.outputFiles[0].contents;
console.log(`size: ${code.length} bytes minified, ${gzipSync(code).length} bytes min+gzip (without protobuf-es)`);

// 2. Speed: sequential round trips for `seconds`, goomerang vs a bare ws echo.
const server = process.env.GOOMERANG_LAB_SERVER ?? "../../target/release/goomerang-lab-server";
const lab = spawn(server, ["--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
const port = await new Promise((resolve) =>
  createInterface({ input: lab.stdout }).on("line", (line) => {
    const m = /^LISTENING (\d+)$/.exec(line);
    if (m) resolve(Number(m[1]));
  }),
);
const { Lab } = await import("../dist-test/test/gen/lab/v1/lab_goomerang.js");

async function goomerang(concurrency) {
  const client = new Client({ url: `ws://127.0.0.1:${port}/ws`, WebSocket });
  await client.connect();
  let done = 0;
  const end = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        await client.request(Lab.methods.echo, { text: "ping" });
        done += 1;
      }
    }),
  );
  client.close();
  return done / seconds;
}

async function bareWs(concurrency) {
  // The echo server runs in a process of its own, as the Rust server does.
  const echo = spawn(
    process.execPath,
    [
      "-e",
      `const { WebSocketServer } = require("ws");
       const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
       wss.on("connection", (s) => s.on("message", (m) => s.send(m)));
       wss.on("listening", () => console.log("LISTENING " + wss.address().port));`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const echoPort = await new Promise((resolve) =>
    createInterface({ input: echo.stdout }).on("line", (line) => {
      const m = /^LISTENING (\d+)$/.exec(line);
      if (m) resolve(Number(m[1]));
    }),
  );
  const ws = new WebSocket(`ws://127.0.0.1:${echoPort}`);
  await new Promise((r) => ws.once("open", r));
  const waiting = [];
  ws.on("message", () => waiting.shift()());
  let done = 0;
  const end = Date.now() + seconds * 1000;
  const payload = Buffer.from("ping");
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        await new Promise((r) => {
          waiting.push(r);
          ws.send(payload);
        });
        done += 1;
      }
    }),
  );
  ws.close();
  echo.kill("SIGKILL");
  return done / seconds;
}

for (const concurrency of [1, 32]) {
  const g = [];
  const b = [];
  for (let i = 0; i < runs; i++) {
    g.push(await goomerang(concurrency));
    b.push(await bareWs(concurrency));
  }
  const gm = median(g);
  const bm = median(b);
  console.log(
    `node round trips, ${concurrency} in flight: goomerang ${gm.toFixed(0)}/s, bare ws echo ${bm.toFixed(0)}/s, ratio ${(gm / bm).toFixed(2)} (medians of ${runs} runs of ${seconds}s)`,
  );
}
lab.kill("SIGKILL");
