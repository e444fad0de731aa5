//! A received frame: goomerang's decoder must agree with prost's on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goomerang::fuzzing::frame_against_prost(data));
