//! The protoc-gen-goomerang binary: reads a CodeGeneratorRequest on stdin, writes the response on stdout.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use prost::Message as _;

fn main() -> ExitCode {
    let mut request = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut request) {
        eprintln!("protoc-gen-goomerang: cannot read the request from stdin: {err}");
        return ExitCode::FAILURE;
    }
    let response = protoc_gen_goomerang::plugin::run(&request).encode_to_vec();
    if let Err(err) = std::io::stdout().write_all(&response) {
        eprintln!("protoc-gen-goomerang: cannot write the response to stdout: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
