//! The plugin under plain protoc and under buf (next to protoc-gen-prost) gives exactly what the build.rs path gives.
//!
//! The tools come from `bash scripts/test` (protoc vendored by PyPI's grpcio-tools, buf from
//! npm, protoc-gen-prost from crates.io). With GOOMERANG_REQUIRE_TOOLS=1 (set by that script
//! and CI) a missing tool fails the test; otherwise the test says it is skipping.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN: &str = env!("CARGO_BIN_EXE_protoc-gen-goomerang");

/// Says a tool is missing: fails under GOOMERANG_REQUIRE_TOOLS, else notes the skip.
fn tool_missing(what: &str) -> bool {
    if std::env::var_os("GOOMERANG_REQUIRE_TOOLS").is_some() {
        panic!("{what} is not installed; run `bash scripts/test`, which installs it");
    }
    eprintln!("SKIPPING: {what} is not installed (run `bash scripts/test` to install it)");
    true
}

fn run(command: &mut Command) {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The include dir grpcio-tools ships with the well-known types; when
/// grpcio-tools (or the directory) is missing, the test skips, or fails under
/// GOOMERANG_REQUIRE_TOOLS.
fn grpc_tools_include() -> Option<PathBuf> {
    let found = Command::new("python3")
        .args([
            "-c",
            "import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("_proto"))
        .filter(|dir| dir.join("google/protobuf/empty.proto").is_file());
    if found.is_none() {
        tool_missing(
            "grpcio-tools (python3 -m pip install grpcio-tools) with its _proto include dir",
        );
    }
    found
}

#[test]
fn protoc_output_matches_build_rs_output() {
    let Some(wkt) = grpc_tools_include() else {
        return;
    };
    let out = support::temp_dir("protoc");
    let mut protoc = Command::new("python3");
    protoc
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", support::fixtures_dir().display()))
        .arg(format!("-I{}", support::root().join("proto").display()))
        .arg(format!("-I{}", wkt.display()))
        .arg(format!("--plugin=protoc-gen-goomerang={PLUGIN}"))
        .arg(format!("--goomerang_out={}", out.display()))
        .args(support::fixtures());
    run(&mut protoc);
    assert_eq!(support::goomerang_files(&out), support::build_rs_output());
}

#[test]
fn protoc_reports_bad_parameters_through_the_response() {
    let Some(wkt) = grpc_tools_include() else {
        return;
    };
    let out = support::temp_dir("protoc-bad-param");
    let output = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", support::fixtures_dir().display()))
        .arg(format!("-I{}", support::root().join("proto").display()))
        .arg(format!("-I{}", wkt.display()))
        .arg(format!("--plugin=protoc-gen-goomerang={PLUGIN}"))
        .arg(format!("--goomerang_out=colour=blue:{}", out.display()))
        .arg("nopackage.proto")
        .output()
        .expect("spawn protoc");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key \"colour\""), "{stderr}");
}

fn buf() -> Option<PathBuf> {
    let local = support::root().join("node_modules/.bin/buf");
    if local.exists() {
        return Some(local);
    }
    Command::new("buf")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("buf"))
}

/// Whether `tool --version` runs and succeeds (spawning is not enough).
fn which(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Copies `from` (files only, one level) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// The buf CLI, when it and protoc-gen-prost are installed (else the test
/// skips, or fails under GOOMERANG_REQUIRE_TOOLS).
fn buf_tools() -> Option<PathBuf> {
    let Some(buf) = buf() else {
        tool_missing("buf (npm install)");
        return None;
    };
    if !which("protoc-gen-prost")
        && tool_missing("protoc-gen-prost (cargo install protoc-gen-prost)")
    {
        return None;
    }
    Some(buf)
}

/// Runs `buf generate` in `work`: a buf.yaml listing `modules`, the README's
/// buf.gen.yaml (examples/buf), and the plugin under test on PATH.
fn buf_generate(buf: &Path, work: &Path, modules: &[&str]) {
    let listed: String = modules.iter().map(|m| format!("  - path: {m}\n")).collect();
    std::fs::write(
        work.join("buf.yaml"),
        format!("version: v2\nmodules:\n{listed}"),
    )
    .expect("buf.yaml");
    std::fs::copy(
        support::root().join("examples/buf/buf.gen.yaml"),
        work.join("buf.gen.yaml"),
    )
    .expect("buf.gen.yaml");
    let plugin_dir = Path::new(PLUGIN).parent().expect("plugin dir");
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new(buf)
        .current_dir(work)
        .env("PATH", path)
        .arg("generate"));
}

#[test]
fn buf_generate_with_the_readme_config_matches_build_rs_output() {
    let Some(buf) = buf_tools() else {
        return;
    };
    // A buf workspace: the fixtures module and goomerang's proto/ module, plus
    // examples/buf/buf.gen.yaml (the README's config) with the plugin on PATH.
    let work = support::temp_dir("buf");
    copy_dir(&support::fixtures_dir(), &work.join("fixtures"));
    copy_dir(
        &support::root().join("proto/goomerang/v1"),
        &work.join("proto/goomerang/v1"),
    );
    buf_generate(&buf, &work, &["fixtures", "proto"]);
    let gen_dir = work.join("src/gen");
    let mut generated = support::goomerang_files(&gen_dir);
    // buf generates every module of the workspace: goomerang's own proto/
    // module too (an empty file, as protoc-gen-prost writes goomerang.v1.rs).
    let options = generated
        .remove("goomerang.v1.goomerang.rs")
        .expect("a file for the options package");
    assert!(options.contains("has no services"), "{options}");
    assert_eq!(generated, support::build_rs_output());
    // protoc-gen-prost wrote the messages next to ours, with type names.
    let prost =
        std::fs::read_to_string(gen_dir.join("fixtures.features.v1.rs")).expect("prost output");
    assert!(
        prost.contains("impl ::prost::Name for Ping"),
        "enable_type_names is on"
    );
}

#[test]
fn print_options_writes_the_bundled_options_proto() {
    let output = Command::new(PLUGIN)
        .arg("--print-options")
        .output()
        .expect("spawn");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    let in_repo = std::fs::read_to_string(support::root().join("proto/goomerang/v1/options.proto"))
        .expect("options.proto");
    assert_eq!(printed, in_repo);
    let unknown = Command::new(PLUGIN).arg("--bogus").output().expect("spawn");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown argument \"--bogus\""));
}

#[test]
fn buf_generate_in_a_users_own_project_as_the_readme_says() {
    let Some(buf) = buf_tools() else {
        return;
    };
    // The README's steps: one module `proto/`, the options written there by
    // `protoc-gen-goomerang --print-options`, the README's buf.gen.yaml.
    let work = support::temp_dir("buf-user");
    let proto = work.join("proto");
    std::fs::create_dir_all(proto.join("goomerang/v1")).expect("mkdir");
    std::fs::create_dir_all(proto.join("shop/v1")).expect("mkdir");
    let options = Command::new(PLUGIN)
        .arg("--print-options")
        .output()
        .expect("spawn");
    std::fs::write(proto.join("goomerang/v1/options.proto"), options.stdout).expect("write");
    std::fs::copy(
        support::fixtures_dir().join("shared.proto"),
        proto.join("shop/v1/shared.proto"),
    )
    .expect("copy");
    buf_generate(&buf, &work, &["proto"]);
    let generated = support::goomerang_files(&work.join("src/gen"));
    assert_eq!(
        generated
            .get("fixtures.shared.v1.goomerang.rs")
            .map(String::as_str),
        support::build_rs_output()
            .get("fixtures.shared.v1.goomerang.rs")
            .map(String::as_str),
        "the same code as the build.rs path"
    );
}
