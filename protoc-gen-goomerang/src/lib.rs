//! protoc-gen-goomerang: generates goomerang service code (handler traits, registration, typed stubs).
//!
//! Three ways in, one generator, identical output:
//! - as a protoc/buf plugin (the `protoc-gen-goomerang` binary, see [`plugin`]);
//! - from a `build.rs` with no protoc at all ([`compile_protos`] / [`Builder`]: protox parses,
//!   prost-build writes the messages, this crate writes the services);
//! - from a descriptor pool you already have ([`generate`]).
//!
//! Output: one `<package>.goomerang.rs` per protobuf package (`_.goomerang.rs`
//! for no package), next to prost's `<package>.rs`, to be included in the same
//! module (`goomerang::include_proto!("pkg")` does both).

mod build;
mod client;
mod docs;
mod model;
mod names;
pub mod plugin;
mod server;
mod typescript;

use proc_macro2::TokenStream;
use prost_reflect::DescriptorPool;
use quote::quote;

pub use build::{Builder, OPTIONS_PROTO, compile_protos};

/// What can go wrong while generating. Nothing is written when generation fails.
///
/// `Debug` prints the same sentence as `Display`, so a `build.rs` whose
/// `main` returns this error shows `Error: <the sentence>`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A plugin parameter was not understood.
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// The input descriptors are unusable (undecodable, missing a file).
    #[error("{0}")]
    Input(String),
    /// Services break goomerang's rules (streaming methods, two methods that
    /// would get one Rust name): every problem of the run, one per line.
    #[error("{}", problems_text(.0))]
    Services(Vec<String>),
    /// The input uses something goomerang does not support (editions, streaming).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// protox could not parse the .proto files (build.rs path).
    #[error("could not compile protos: {0}")]
    Protox(String),
    /// Reading or writing files failed (build.rs path).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn problems_text(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!(
            "{} problems in the protos:\n{}",
            many.len(),
            many.iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// The module TypeScript output imports the client from, unless `ts_import` says otherwise.
const TS_IMPORT: &str = "@goomerang/client";

/// Generation options; the plugin reads them from its parameter string.
#[derive(Clone, Debug)]
pub struct Options {
    runtime: syn::Path,
    /// TypeScript output for @goomerang/client (`lang=ts`), importing the runtime from this module.
    typescript: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: syn::parse_quote!(::goomerang),
            typescript: None,
        }
    }
}

impl Options {
    /// Parses a plugin parameter string: comma-separated `key=value` pairs.
    ///
    /// Keys:
    /// - `runtime=<path>` — the path of the goomerang crate in generated Rust
    ///   code (default `::goomerang`; set it when you re-export goomerang);
    /// - `lang=rust|ts` — the language to generate (default `rust`). `ts`
    ///   writes `<file>_goomerang.ts` beside protoc-gen-es's `<file>_pb.ts`;
    /// - `ts_import=<module>` — where TypeScript output imports the client
    ///   from (default `@goomerang/client`).
    ///
    /// # Errors
    /// [`Error::Parameter`] naming any unknown key or bad value.
    pub fn parse(parameter: &str) -> Result<Options, Error> {
        let mut options = Options::default();
        for pair in parameter
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key.trim() {
                "runtime" => {
                    options.runtime = syn::parse_str(value.trim()).map_err(|err| {
                        Error::Parameter(format!("runtime={value:?} is not a Rust path: {err}"))
                    })?;
                }
                "lang" => match value.trim() {
                    "rust" => options.typescript = None,
                    "ts" | "typescript" => {
                        options
                            .typescript
                            .get_or_insert_with(|| TS_IMPORT.to_owned());
                    }
                    other => {
                        return Err(Error::Parameter(format!(
                            "lang={other:?}: the languages are rust and ts"
                        )));
                    }
                },
                "ts_import" => {
                    let module = value.trim();
                    if module.is_empty() || module.contains(['"', '\\', '\n']) {
                        return Err(Error::Parameter(format!(
                            "ts_import={value:?} is not a module specifier"
                        )));
                    }
                    options.typescript = Some(module.to_owned());
                }
                other => {
                    return Err(Error::Parameter(format!(
                        "unknown key {other:?} (known keys: runtime, lang, ts_import)"
                    )));
                }
            }
        }
        Ok(options)
    }

    /// Generates TypeScript for @goomerang/client instead of Rust, importing
    /// the client from `module` (usually `@goomerang/client`).
    pub fn typescript(mut self, module: impl Into<String>) -> Self {
        self.typescript = Some(module.into());
        self
    }

    /// Sets the path of the goomerang crate used by generated code.
    pub fn runtime(mut self, path: syn::Path) -> Self {
        self.runtime = path;
        self
    }
}

/// A generated file: its name relative to the output directory, and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// e.g. `helloworld.v1.goomerang.rs`.
    pub name: String,
    /// Formatted Rust source starting with an `@generated` line.
    pub content: String,
}

/// Generates the service code for `files` (names as in the pool) — one file per
/// protobuf package of those files, services or not, so that
/// `goomerang::include_proto!` works for every package.
///
/// # Errors
/// [`Error::Services`] listing every rule the services break, or
/// [`Error::Input`] when a file is missing.
pub fn generate(
    pool: &DescriptorPool,
    files: &[String],
    options: &Options,
) -> Result<Vec<GeneratedFile>, Error> {
    let packages = model::services_by_package(pool, files)?;
    if let Some(module) = &options.typescript {
        let services: Vec<&model::Service> = packages.values().flatten().collect();
        return Ok(typescript::render(&services, module));
    }
    packages
        .into_iter()
        .map(|(package, services)| render(&package, &services, options))
        .collect()
}

/// The output file name for a package.
pub fn file_name(package: &str) -> String {
    if package.is_empty() {
        "_.goomerang.rs".to_owned()
    } else {
        format!("{package}.goomerang.rs")
    }
}

fn render(
    package: &str,
    services: &[model::Service],
    options: &Options,
) -> Result<GeneratedFile, Error> {
    let runtime = &options.runtime;
    let rt: TokenStream = quote!(#runtime);
    let modules = services.iter().map(|service| {
        let server = server::module(service, &rt);
        let client = client::module(service, &rt);
        quote!(#server #client)
    });
    let tokens = quote!(#(#modules)*);
    let file: syn::File = syn::parse2(tokens)
        .map_err(|err| Error::Input(format!("generated code does not parse (a bug): {err}")))?;
    let shown = if package.is_empty() {
        "(no package)"
    } else {
        package
    };
    let content = if services.is_empty() {
        format!(
            "// @generated by protoc-gen-goomerang. DO NOT EDIT.\n// Protobuf package {shown} has no services; this file lets `goomerang::include_proto!` include it.\n"
        )
    } else {
        format!(
            "// @generated by protoc-gen-goomerang. DO NOT EDIT.\n// Services of protobuf package {shown}.\n\n{}",
            prettyplease::unparse(&file)
        )
    };
    Ok(GeneratedFile {
        name: file_name(package),
        content,
    })
}
