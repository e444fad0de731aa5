//! Topics and patterns: validation never panics, and routing agrees with the pattern rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goomerang::fuzzing::topic(data));
