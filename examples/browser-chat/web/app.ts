// The chat page: joins through the generated LobbyClient, answers the server's questions
// (the Tab service), and chats in a room through topics.

import { Client, GoomerangError } from "@goomerang/client";

import { LobbyClient, registerTab } from "./gen/chat/v1/chat_goomerang.js";
import { LineSchema } from "./gen/chat/v1/chat_pb.js";

const ROOM = "room.general";
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const client = new Client({ url: `ws://${location.host}/ws` });
const lobby = new LobbyClient(client);
let name = "";

function show(from: string, text: string): void {
  const line = document.createElement("p");
  const who = document.createElement("span");
  who.className = from === "server" ? "from server" : "from";
  who.textContent = `${from}: `;
  line.append(who, text);
  $("log").append(line);
  $("log").scrollTop = $("log").scrollHeight;
}

// The server asks; the person answers in the page.
registerTab(client, {
  ask: (question) =>
    new Promise((resolve) => {
      $("question-text").textContent = question.text;
      $("question").hidden = false;
      $("answer-text").focus();
      $<HTMLFormElement>("answer").onsubmit = (event) => {
        event.preventDefault();
        $("question").hidden = true;
        resolve({ text: $<HTMLInputElement>("answer-text").value });
      };
    }),
});

// Lines published in the room, ours included.
client.onMessage(LineSchema, (line) => show(line.from, line.text));
client.onState((state) => ($("state").textContent = state));

$<HTMLFormElement>("join").onsubmit = async (event) => {
  event.preventDefault();
  try {
    name = $<HTMLInputElement>("name").value;
    await client.subscribe(ROOM);
    const reply = await lobby.join({ name });
    show("server", reply.greeting);
    $("join").hidden = true;
    $("say").hidden = false;
  } catch (err) {
    show("server", err instanceof GoomerangError ? `${err.codeName}: ${err.rawMessage}` : String(err));
  }
};

$<HTMLFormElement>("say").onsubmit = async (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("line");
  if (input.value === "") return;
  await client.publish(ROOM, LineSchema, { from: name, text: input.value });
  input.value = "";
};

await client.connect();
