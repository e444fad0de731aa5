//! Generates every fixture under tests/fixtures through the build.rs path.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut fixtures: Vec<String> = std::fs::read_dir("../fixtures")?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".proto"))
        .collect();
    fixtures.sort();
    println!("cargo:rerun-if-changed=../fixtures");
    protoc_gen_goomerang::compile_protos(&fixtures, &["../fixtures"])?;
    Ok(())
}
