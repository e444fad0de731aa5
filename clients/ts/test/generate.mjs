// Generates TypeScript with buf, as a user would (goomerang's options.proto is written out by
// the plugin itself, --print-options): the tests' stubs from test/proto into test/gen, and the
// generator's fixtures (tests/fixtures, every naming hazard) into test/gen-fixtures, which the
// test build type-checks.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

const plugin = "../../target/debug/protoc-gen-goomerang";
const options = execFileSync(plugin, ["--print-options"]);

function generate(from, into) {
  const root = `build/${into.replaceAll("/", "-")}`;
  rmSync(root, { recursive: true, force: true });
  rmSync(into, { recursive: true, force: true });
  mkdirSync(`${root}/goomerang/v1`, { recursive: true });
  cpSync(from, root, { recursive: true });
  writeFileSync(`${root}/goomerang/v1/options.proto`, options);
  writeFileSync(`${root}/buf.yaml`, "version: v2\n");
  const template = {
    version: "v2",
    plugins: [
      { local: "./node_modules/.bin/protoc-gen-es", out: into, opt: ["target=ts", "import_extension=js"] },
      { local: plugin, out: into, opt: ["lang=ts"] },
    ],
  };
  execFileSync("./node_modules/.bin/buf", ["generate", root, "--template", JSON.stringify(template)], {
    stdio: "inherit",
  });
}

generate("test/proto", "test/gen");
generate("../../tests/fixtures", "test/gen-fixtures");
