//! Generates the lab's messages and services from the TypeScript tests' proto (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_goomerang::compile_protos(&["../test/proto/lab/v1/lab.proto"], &["../test/proto"])?;
    Ok(())
}
