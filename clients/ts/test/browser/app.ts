// The browser test's page: the generated client in a real browser, driven by the test through `window.lab`.

import { Client } from "@goomerang/client";

import { LabClient, registerMember } from "../gen/lab/v1/lab_goomerang.js";
import { NoteSchema } from "../gen/lab/v1/lab_pb.js";

const client = new Client({
  url: `ws://${location.host}/ws`,
  reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
});
const heard: string[] = [];
registerMember(client, {
  ask: (question) => ({ text: `the browser says yes to ${question.text}` }),
  tell: (note) => {
    heard.push(`told:${note.text}`);
  },
});
client.onMessage(NoteSchema, (note, ctx) => {
  heard.push(`${ctx.metadata.topic}:${note.text}`);
});
const state = document.getElementById("state")!;
client.onState((now) => {
  state.textContent = now;
});
const lab = new LabClient(client);

/** What the test calls through `page.evaluate`. */
const api = {
  connect: () => client.connect(),
  state: () => client.state,
  echo: async (text: string) => (await lab.echo({ text })).text,
  askMe: async (text: string) => (await lab.askMe({ text })).text,
  subscribe: (pattern: string) => client.subscribe(pattern),
  publish: (topic: string, text: string) => client.publish(topic, NoteSchema, { text }),
  heard: () => heard.slice(),
};
(window as unknown as { lab: typeof api }).lab = api;
