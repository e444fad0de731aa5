//! Shared by the generator's tests: fixture paths, the build.rs path's output, temp dirs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fixture protos: every `.proto` in tests/fixtures, by name.
pub(crate) fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".proto"))
        .collect();
    names.sort();
    names
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub(crate) fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures")
}

/// A fresh, empty directory under the target dir.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("target/goomerang-test-tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs the build.rs path over the fixtures; returns `*.goomerang.rs` by name.
pub(crate) fn build_rs_output() -> BTreeMap<String, String> {
    let out = temp_dir("build-rs");
    protoc_gen_goomerang::Builder::new()
        .out_dir(&out)
        .compile(&fixtures(), &[fixtures_dir()])
        .expect("build.rs path generates");
    goomerang_files(&out)
}

/// The `*.goomerang.rs` files of a directory, by name.
pub(crate) fn goomerang_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read output dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".goomerang.rs"))
        .map(|name| {
            let content = std::fs::read_to_string(dir.join(&name)).expect("read generated file");
            (name, content)
        })
        .collect()
}
