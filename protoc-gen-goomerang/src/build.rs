//! The build.rs path: protox parses the protos (no protoc), prost-build writes messages, we write services.

use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, FileResolver, GoogleFileResolver, IncludeFileResolver};

use crate::{Error, Options, generate};

/// Compiles `protos` (searched in `includes`) into `$OUT_DIR`: prost's
/// `<package>.rs` with type names enabled, and our `<package>.goomerang.rs`.
/// Include both with `goomerang::include_proto!("<package>")`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     protoc_gen_goomerang::compile_protos(&["proto/chat/v1/chat.proto"], &["proto"])?;
///     Ok(())
/// }
/// ```
///
/// # Errors
/// When a proto does not parse, a service cannot be generated, or writing fails.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// Configures the build.rs path; see [`compile_protos`].
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct Builder {
    out_dir: Option<PathBuf>,
    options: Options,
    prost: Option<prost_build::Config>,
}

impl Builder {
    /// Defaults: `$OUT_DIR`, the `::goomerang` runtime path.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes into `dir` instead of `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Generation options (e.g. the runtime path).
    pub fn options(mut self, options: Options) -> Builder {
        self.options = options;
        self
    }

    /// A prost-build configuration to use for the messages (type names are
    /// always enabled on it, since goomerang routes by type name).
    pub fn prost_config(mut self, config: prost_build::Config) -> Builder {
        self.prost = Some(config);
        self
    }

    /// Compiles `protos`, searching imports in `includes`. The goomerang
    /// options.proto is always importable as `goomerang/v1/options.proto`.
    ///
    /// # Errors
    /// As [`compile_protos`].
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    Error::Input(
                        "OUT_DIR is not set; call this from build.rs or set out_dir".into(),
                    )
                })?,
        };
        let mut resolver = ChainFileResolver::new();
        for include in includes {
            resolver.add(IncludeFileResolver::new(include.as_ref().to_path_buf()));
        }
        resolver.add(BundledOptions);
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_source_info(true).include_imports(true);
        for proto in protos {
            compiler
                .open_file(proto.as_ref())
                .map_err(|e| Error::Protox(e.to_string()))?;
            println!("cargo:rerun-if-changed={}", proto.as_ref().display());
        }
        let files: Vec<String> = compiler
            .files()
            .filter(|f| !f.is_import())
            .map(|f| f.name().to_owned())
            .collect();
        // The encoded set keeps extension options; prost-types' copy drops them.
        let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
            .map_err(|err| Error::Input(format!("invalid descriptors: {err}")))?;
        let fds = compiler.file_descriptor_set();
        let mut prost = self.prost.unwrap_or_default();
        prost.enable_type_names().out_dir(&out_dir);
        prost.compile_fds(fds)?;
        for file in generate(&pool, &files, &self.options)? {
            let path = out_dir.join(&file.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, file.content)?;
        }
        Ok(())
    }
}

/// Serves the bundled `goomerang/v1/options.proto` from memory.
struct BundledOptions;

impl FileResolver for BundledOptions {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            protox::file::File::from_source(name, OPTIONS_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Where protos import the options from.
pub(crate) const OPTIONS_PROTO_NAME: &str = "goomerang/v1/options.proto";

/// The `goomerang/v1/options.proto` this version understands (what
/// `protoc-gen-goomerang --print-options` prints).
pub const OPTIONS_PROTO: &str = include_str!("../../proto/goomerang/v1/options.proto");
