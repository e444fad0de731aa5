//! An upgrade request's method, URI (query) and headers (subprotocols): parsing never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goomerang::fuzzing::handshake(data));
