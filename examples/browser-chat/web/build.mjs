// Builds the chat page into web/dist: TypeScript stubs from proto/ with buf (protoc-gen-es and
// protoc-gen-goomerang lang=ts), then one bundle with esbuild. Run from the repository root
// after `npm ci` in clients/ts and `cargo build -p protoc-gen-goomerang` (run.sh does both).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const web = "examples/browser-chat/web";
const tools = "clients/ts/node_modules";
const plugin = "target/debug/protoc-gen-goomerang";
const require = createRequire(`${process.cwd()}/clients/ts/package.json`);
const { build } = require("esbuild");

rmSync(`${web}/gen`, { recursive: true, force: true });
rmSync("target/browser-chat-proto", { recursive: true, force: true });
mkdirSync("target/browser-chat-proto/goomerang/v1", { recursive: true });
execFileSync("cp", ["-r", "examples/browser-chat/proto/chat", "target/browser-chat-proto/"]);
writeFileSync("target/browser-chat-proto/goomerang/v1/options.proto", execFileSync(plugin, ["--print-options"]));
writeFileSync("target/browser-chat-proto/buf.yaml", "version: v2\n");
const template = {
  version: "v2",
  plugins: [
    { local: `${tools}/.bin/protoc-gen-es`, out: `${web}/gen`, opt: ["target=ts", "import_extension=js"] },
    { local: plugin, out: `${web}/gen`, opt: ["lang=ts"] },
  ],
};
execFileSync(`${tools}/.bin/buf`, ["generate", "target/browser-chat-proto", "--template", JSON.stringify(template)], {
  stdio: "inherit",
});
mkdirSync(`${web}/dist`, { recursive: true });
await build({
  entryPoints: [`${web}/app.ts`],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  outfile: `${web}/dist/app.js`,
  alias: { "@goomerang/client": "./clients/ts/src/index.ts" },
  nodePaths: [tools],
  logLevel: "warning",
});
copyFileSync(`${web}/index.html`, `${web}/dist/index.html`);
