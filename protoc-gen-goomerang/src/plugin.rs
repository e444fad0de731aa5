//! The protoc plugin protocol: CodeGeneratorRequest bytes in, CodeGeneratorResponse out, never a panic.

use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::compiler::{CodeGeneratorResponse, code_generator_response};

use crate::{Error, Options, generate};

/// `CodeGeneratorRequest`, with `proto_file` kept as raw bytes: decoding it
/// with prost-types would drop the extension options we read.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRequest {
    #[prost(string, repeated, tag = "1")]
    file_to_generate: Vec<String>,
    #[prost(string, optional, tag = "2")]
    parameter: Option<String>,
    #[prost(bytes = "vec", repeated, tag = "15")]
    proto_file: Vec<Vec<u8>>,
}

/// A `FileDescriptorSet` made of raw file descriptors.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFileSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// `CodeGeneratorResponse.Feature.FEATURE_PROTO3_OPTIONAL`.
const FEATURE_PROTO3_OPTIONAL: u64 = 1;

/// Runs the plugin on an encoded `CodeGeneratorRequest`. Failures are
/// reported in `CodeGeneratorResponse.error`, as protoc expects.
pub fn run(request: &[u8]) -> CodeGeneratorResponse {
    let mut response = CodeGeneratorResponse {
        supported_features: Some(FEATURE_PROTO3_OPTIONAL),
        ..CodeGeneratorResponse::default()
    };
    match files_for(request) {
        Ok(files) => {
            response.file = files
                .into_iter()
                .map(|f| code_generator_response::File {
                    name: Some(f.name),
                    content: Some(f.content),
                    ..Default::default()
                })
                .collect();
        }
        Err(err) => response.error = Some(format!("protoc-gen-goomerang: {err}")),
    }
    response
}

fn files_for(request: &[u8]) -> Result<Vec<crate::GeneratedFile>, Error> {
    let request = RawRequest::decode(request)
        .map_err(|err| Error::Input(format!("undecodable CodeGeneratorRequest: {err}")))?;
    let options = Options::parse(request.parameter.as_deref().unwrap_or(""))?;
    for raw in &request.proto_file {
        let file = prost_types::FileDescriptorProto::decode(raw.as_slice())
            .map_err(|err| Error::Input(format!("undecodable file descriptor: {err}")))?;
        if file.syntax() == "editions" {
            return Err(Error::Unsupported(format!(
                "{} uses protobuf editions; goomerang supports proto2 and proto3 files",
                file.name()
            )));
        }
    }
    let set = RawFileSet {
        file: request.proto_file,
    };
    // prost-reflect 0.16 can panic while describing some malformed
    // descriptors (found by fuzzing this function); a plugin answers with an
    // error instead.
    let encoded = set.encode_to_vec();
    let pool = std::panic::catch_unwind(|| DescriptorPool::decode(encoded.as_slice()))
        .map_err(|_| {
            Error::Input("invalid descriptors: the descriptor decoder gave up on them".into())
        })?
        .map_err(|err| Error::Input(format!("invalid descriptors: {err}")))?;
    generate(&pool, &request.file_to_generate, &options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_the_decoder_panics_on_are_an_error() {
        // Found by the plugin_request fuzz target: prost-reflect panics describing them.
        let input = include_bytes!("../tests/data/descriptor-decoder-panic.bin");
        let response = run(input);
        let error = response.error.expect("an error, not a panic");
        assert!(error.contains("invalid descriptors"), "{error}");
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        let response = run(&[0xff, 0xff, 0xff]);
        assert!(response.error.expect("error").contains("undecodable"));
    }

    #[test]
    fn unknown_parameters_are_named() {
        let request = RawRequest {
            parameter: Some("runtime=::goomerang,colour=blue".into()),
            ..RawRequest::default()
        };
        let response = run(&request.encode_to_vec());
        let error = response.error.expect("error");
        assert!(error.contains("\"colour\""), "{error}");
    }

    #[test]
    fn editions_files_are_refused_clearly() {
        let file = prost_types::FileDescriptorProto {
            name: Some("new.proto".into()),
            syntax: Some("editions".into()),
            ..Default::default()
        };
        let request = RawRequest {
            file_to_generate: vec!["new.proto".into()],
            proto_file: vec![file.encode_to_vec()],
            ..RawRequest::default()
        };
        let error = run(&request.encode_to_vec()).error.expect("error");
        assert!(
            error.contains("new.proto uses protobuf editions"),
            "{error}"
        );
    }
}
