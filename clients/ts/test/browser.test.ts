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
