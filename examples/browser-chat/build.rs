//! Generates the chat's messages and services from proto/ (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_goomerang::compile_protos(&["proto/chat/v1/chat.proto"], &["proto"])?;
    Ok(())
}
