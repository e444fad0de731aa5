//! Checks that the runtime's checked-in `Frame` code is what `frame.proto` generates.
//!
//! Run with `GOOMERANG_BLESS=1` to rewrite the checked-in file after editing the proto.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

#[test]
fn frame_proto_matches_checked_in_code() {
    let root = workspace_root();
    let fds = protox::compile(["goomerang/v1/frame.proto"], [root.join("proto")])
        .expect("frame.proto compiles");
    let out = tempdir();
    let mut config = prost_build::Config::new();
    config
        .bytes(["."])
        .enable_type_names()
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost-build generates");
    let generated = std::fs::read_to_string(out.join("goomerang.v1.rs")).expect("generated file");
    let generated = format!(
        "//! Wire types generated from `proto/goomerang/v1/frame.proto` (see tests/frame_proto_sync.rs).\n// @generated\n#![allow(missing_docs, unreachable_pub, clippy::all)]\n{generated}"
    );
    let checked_in = root.join("runtime/src/wire/proto/goomerang_v1.rs");
    if std::env::var_os("GOOMERANG_BLESS").is_some() {
        std::fs::write(&checked_in, &generated).expect("write checked-in file");
        return;
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == generated,
        "{} is stale; rerun this test with GOOMERANG_BLESS=1",
        checked_in.display()
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goomerang-frame-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
