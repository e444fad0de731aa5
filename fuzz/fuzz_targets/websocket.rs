//! Received WebSocket bytes: goomerang's frame reader must read what tungstenite's reads, and stop at the same error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goomerang::fuzzing::websocket_against_tungstenite(data));
