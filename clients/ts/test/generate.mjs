// Generates the tests' TypeScript stubs from test/proto with buf, as a user would:
// goomerang's options.proto is written out by the plugin itself (--print-options).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

const plugin = "../../target/debug/protoc-gen-goomerang";
rmSync("build/proto", { recursive: true, force: true });
rmSync("test/gen", { recursive: true, force: true });
mkdirSync("build/proto/goomerang/v1", { recursive: true });
cpSync("test/proto", "build/proto", { recursive: true });
writeFileSync("build/proto/goomerang/v1/options.proto", execFileSync(plugin, ["--print-options"]));
writeFileSync("build/proto/buf.yaml", "version: v2\n");
execFileSync(
  "./node_modules/.bin/buf",
  ["generate", "build/proto", "--template", "test/buf.gen.yaml"],
  { stdio: "inherit" },
);
