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
            "fixtures.hazards.greeting.goomerang.rs",
            "fixtures.other.v1.goomerang.rs",
            "fixtures.shared.v1.goomerang.rs",
            "outer.inner.deep.goomerang.rs",
            "outer.other.goomerang.rs",
        ],
        "one file per package, services or not"
    );
    for (name, content) in &files {
        assert!(
            content.starts_with("// @generated"),
            "{name} lacks the @generated line"
        );
        insta::assert_snapshot!(name.as_str(), content);
    }
}

#[test]
fn typescript_snapshots() {
    let out = support::temp_dir("ts");
    protoc_gen_goomerang::Builder::new()
        .out_dir(&out)
        .options(protoc_gen_goomerang::Options::default().typescript("@goomerang/client"))
        .compile(&support::fixtures(), &[support::fixtures_dir()])
        .expect("the TypeScript output generates");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("read output dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with("_goomerang.ts"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "features_goomerang.ts",
            "hazards_goomerang.ts",
            "nested_goomerang.ts",
            "nopackage_goomerang.ts",
            "shared_goomerang.ts",
        ],
        "one file per .proto with services"
    );
    for name in &names {
        let content = std::fs::read_to_string(out.join(name)).expect("read generated file");
        assert!(
            content.starts_with("// @generated"),
            "{name} lacks the @generated line"
        );
        insta::assert_snapshot!(name.as_str(), content);
    }
}

#[test]
fn typescript_parameters_are_checked() {
    let lang = protoc_gen_goomerang::Options::parse("lang=go").expect_err("refused");
    assert_eq!(
        lang.to_string(),
        "invalid parameter: lang=\"go\": the languages are rust and ts"
    );
    assert!(protoc_gen_goomerang::Options::parse("lang=ts,ts_import=./client.js").is_ok());
    let import = protoc_gen_goomerang::Options::parse("ts_import=a\"b").expect_err("refused");
    assert!(
        import.to_string().contains("is not a module specifier"),
        "{import}"
    );
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
fn every_problem_of_a_run_is_reported() {
    let err = generation_error(
        "many",
        "syntax = \"proto3\"; package m; message M {} message R {} \
         service S { rpc Watch(M) returns (stream M); rpc GetThing(M) returns (R); \
                     rpc get_thing(M) returns (R); } \
         service T { rpc Go(M) returns (R); rpc GoFull(M) returns (R); }",
    );
    assert!(err.starts_with("3 problems in the protos:"), "{err}");
    assert!(
        err.contains("m.S.Watch: streaming methods are not supported"),
        "{err}"
    );
    assert!(
        err.contains("m.S: methods GetThing and get_thing both become `get_thing`"),
        "{err}"
    );
    assert!(
        err.contains("m.T: methods Go and GoFull both become `go_full`"),
        "{err}"
    );
}

#[test]
fn errors_read_as_sentences_from_build_rs() {
    // A build.rs whose main returns this error prints it with `{:?}`.
    let dir = support::temp_dir("err-debug");
    let err = protoc_gen_goomerang::Builder::new()
        .out_dir(&dir)
        .compile(&[Path::new("missing.proto")], &[&dir])
        .expect_err("no such file");
    let debug = format!("{err:?}");
    assert_eq!(debug, err.to_string());
    assert!(debug.starts_with("could not compile protos: "), "{debug}");
    assert!(!debug.contains("Protox("), "{debug}");
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
