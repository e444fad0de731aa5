// Bundles the browser test's page (test/browser) into build/browser with esbuild.
import { copyFileSync, mkdirSync } from "node:fs";
import { build } from "esbuild";

mkdirSync("build/browser", { recursive: true });
await build({
  entryPoints: ["test/browser/app.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  outfile: "build/browser/app.js",
  alias: { "@goomerang/client": "./src/index.ts" },
  logLevel: "warning",
});
copyFileSync("test/browser/index.html", "build/browser/index.html");
