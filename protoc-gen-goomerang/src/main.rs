//! The protoc-gen-goomerang binary: reads a CodeGeneratorRequest on stdin, writes the response on stdout.
//!
//! Run by hand, it also prints the `goomerang/v1/options.proto` it understands
//! (`--print-options`), to put where buf or protoc can import it.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use prost::Message as _;

const USAGE: &str = "\
protoc-gen-goomerang: the goomerang plugin for protoc and buf.

It is run by protoc (--goomerang_out=DIR) or buf (a `local: protoc-gen-goomerang`
plugin in buf.gen.yaml), which send it a request on stdin.

By hand:
  protoc-gen-goomerang --print-options   print goomerang/v1/options.proto (the service and
                                         method annotations) for your proto include path
  protoc-gen-goomerang --version         print the version
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => plugin(),
        Some("--print-options") => print(protoc_gen_goomerang::OPTIONS_PROTO),
        Some("--version" | "-V") => print(&format!(
            "protoc-gen-goomerang {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        Some("--help" | "-h") => print(USAGE),
        Some(other) => {
            eprintln!("protoc-gen-goomerang: unknown argument {other:?}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn print(text: &str) -> ExitCode {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("protoc-gen-goomerang: cannot write to stdout: {err}");
            ExitCode::FAILURE
        }
    }
}

fn plugin() -> ExitCode {
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
