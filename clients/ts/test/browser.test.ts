// End to end in a real browser: headless Chromium (playwright-core) loads a page the lab server
// serves on its own port and runs the generated client there.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";

import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";

import { startLab } from "./helpers.js";
import type { Lab } from "./helpers.js";

/** Debian's chromium, unless CHROMIUM says otherwise. */
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Flags that keep Chromium off the network it has no access to. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** What the page puts on `window` (test/browser/app.ts). */
interface PageApi {
  connect(): Promise<void>;
  state(): string;
  echo(text: string): Promise<string>;
  askMe(text: string): Promise<string>;
  subscribe(pattern: string): Promise<void>;
  publish(topic: string, text: string): Promise<void>;
  heard(): string[];
}

type WithLab = Window & { lab: PageApi };

describe("in headless Chromium", { timeout: 90_000 }, () => {
  let browser: Browser;
  let server: Lab;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
    server = await startLab({ staticDir: "build/browser" });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A tab with the lab page open and its client connected. */
  async function tab(): Promise<Page> {
    const page = await browser.newPage();
    page.on("pageerror", (err) => console.error("page error:", err));
    await page.goto(`http://127.0.0.1:${server.port}/`);
    await page.waitForFunction(() => "lab" in window);
    await page.evaluate(() => (window as unknown as WithLab).lab.connect());
    return page;
  }

  test("request/reply and a server-to-browser request", async () => {
    const page = await tab();
    assert.equal(await page.evaluate(() => (window as unknown as WithLab).lab.echo("from the browser")), "from the browser");
    assert.equal(
      await page.evaluate(() => (window as unknown as WithLab).lab.askMe("ready")),
      "the browser says yes to ready",
    );
    await page.close();
  });

  test("pub/sub between two tabs", async () => {
    const listener = await tab();
    const talker = await tab();
    await listener.evaluate(() => (window as unknown as WithLab).lab.subscribe("chat.*"));
    await talker.evaluate(() => (window as unknown as WithLab).lab.publish("chat.room", "hello, tab"));
    await listener.waitForFunction(() => (window as unknown as WithLab).lab.heard().length > 0, undefined, {
      timeout: 10_000,
    });
    assert.deepEqual(await listener.evaluate(() => (window as unknown as WithLab).lab.heard()), ["chat.room:hello, tab"]);
    await listener.close();
    await talker.close();
  });

  test("the page reconnects after the server restarts", async () => {
    const page = await tab();
    const port = server.port;
    await server.stop();
    await page.waitForFunction(() => (window as unknown as WithLab).lab.state() === "reconnecting", undefined, {
      timeout: 10_000,
    });
    server = await startLab({ port, staticDir: "build/browser" });
    await page.waitForFunction(() => (window as unknown as WithLab).lab.state() === "open", undefined, {
      timeout: 20_000,
    });
    assert.equal(await page.evaluate(() => (window as unknown as WithLab).lab.echo("again")), "again");
    await page.close();
  });
});

describe("the browser-chat example in two tabs", { timeout: 90_000 }, () => {
  const CHAT_SERVER = process.env.GOOMERANG_CHAT_SERVER ?? "../../target/debug/browser-chat";
  let browser: Browser;
  let stop: () => void = () => {};
  let port = 0;

  before(async () => {
    const { spawn } = await import("node:child_process");
    const { createInterface } = await import("node:readline");
    const child = spawn(CHAT_SERVER, ["--port", "0", "--web", "../../examples/browser-chat/web/dist"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    stop = () => child.kill("SIGKILL");
    port = await new Promise<number>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`browser-chat exited with ${code}`)));
      createInterface({ input: child.stdout }).on("line", (line) => {
        const match = /^LISTENING (\d+)$/.exec(line);
        if (match !== null) resolve(Number(match[1]));
      });
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  });
  after(async () => {
    await browser?.close();
    stop();
  });

  /** Joins as `name` and answers the server's question with `answer`. */
  async function join(page: Page, name: string, answer: string): Promise<void> {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.locator("#state", { hasText: "open" }).waitFor();
    await page.fill("#name", name);
    await page.click("#join button");
    await page.locator("#question").waitFor({ state: "visible" });
    assert.equal(await page.textContent("#question-text"), `${name}, what brings you here?`);
    await page.fill("#answer-text", answer);
    await page.click("#answer button");
  }

  test("tabs chat through a topic and answer the server's question", async () => {
    const bob = await browser.newPage({ viewport: { width: 760, height: 560 } });
    const ada = await browser.newPage({ viewport: { width: 760, height: 560 } });
    await join(bob, "bob", "the coffee");
    await bob.locator("#log", { hasText: "bob is here for the coffee" }).waitFor();
    await join(ada, "ada", "typed calls both ways");
    await bob.locator("#log", { hasText: "ada is here for typed calls both ways" }).waitFor();
    await ada.fill("#line", "hello bob, this went through a topic");
    await ada.click("#say button");
    await bob.locator("#log", { hasText: "ada: hello bob, this went through a topic" }).waitFor();
    await bob.fill("#line", "hi ada!");
    await bob.click("#say button");
    await ada.locator("#log", { hasText: "bob: hi ada!" }).waitFor();
    const log = await bob.textContent("#log");
    assert.match(log ?? "", /server: Welcome, bob!/);
    await bob.screenshot({ path: "build/browser-chat.png" });
  });
});
