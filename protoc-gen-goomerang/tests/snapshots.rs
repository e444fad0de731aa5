//! Snapshots of the generated code for every fixture (tests/fixtures), and the generator's errors.

mod support;

use std::path::Path;

#[test]
fn generated_code_snapshots() {
    let files = support::build_rs_output();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "_.goomerang.rs",
            "fixtures.features.v1.goomerang.rs",
            "fixtures.hazards.goomerang.rs",
            "outer.inner.deep.goomerang.rs",
        ],
        "one file per package with services"
    );
    for (name, content) in &files {
        assert!(
            content.starts_with("// @generated"),
            "{name} lacks the @generated line"
        );
        insta::assert_snapshot!(name.as_str(), content);
    }
}

/// Generates from one inline proto; returns the error text.
fn generation_error(name: &str, source: &str) -> String {
    let dir = support::temp_dir(&format!("err-{name}"));
    std::fs::write(dir.join(format!("{name}.proto")), source).expect("write proto");
    std::fs::create_dir_all(dir.join("out")).expect("out dir");
    let result = protoc_gen_goomerang::Builder::new()
        .out_dir(dir.join("out"))
        .compile(&[Path::new(&format!("{name}.proto"))], &[&dir]);
    match result {
        Ok(()) => panic!("{name}: expected an error"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn streaming_methods_are_refused() {
    let err = generation_error(
        "streaming",
        "syntax = \"proto3\"; package s; message M {} service S { rpc Watch(M) returns (stream M); }",
    );
    assert!(
        err.contains("s.S.Watch: streaming methods are not supported"),
        "{err}"
    );
}

#[test]
fn two_methods_with_one_input_type_are_refused() {
    let err = generation_error(
        "dup",
        "syntax = \"proto3\"; package d; message M {} message R {} \
         service S { rpc A(M) returns (R); rpc B(M) returns (R); }",
    );
    assert!(err.contains("methods A and B both take d.M"), "{err}");
}

#[test]
fn methods_that_collide_in_rust_are_refused() {
    let err = generation_error(
        "collide",
        "syntax = \"proto3\"; package c; message M {} message N {} message R {} \
         service S { rpc GetThing(M) returns (R); rpc get_thing(N) returns (R); }",
    );
    assert!(err.contains("both become `get_thing`"), "{err}");
}
