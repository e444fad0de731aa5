//! Generates every fixture under tests/fixtures through the build.rs path.

const FIXTURES: &[&str] = &[
    "features.proto",
    "other.proto",
    "hazards.proto",
    "hazards_greeting.proto",
    "nopackage.proto",
    "nested.proto",
    "nested_other.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_goomerang::compile_protos(FIXTURES, &["../fixtures"])?;
    Ok(())
}
