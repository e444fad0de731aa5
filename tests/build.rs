//! Generates the wire envelope from `proto/goomerang/v1/frame.proto` for the tests' raw peers:
//! an independent copy, so the tests speak the protocol as written, not the runtime's types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/goomerang/v1/frame.proto");
    let fds = protox::compile(["goomerang/v1/frame.proto"], ["../proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .enable_type_names()
        .compile_fds(fds)?;
    Ok(())
}
