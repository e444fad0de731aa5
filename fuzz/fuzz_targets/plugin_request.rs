//! protoc-gen-goomerang's CodeGeneratorRequest handling: any bytes give a response, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The plugin catches the descriptor library's own panics and answers with
    // an error; the fuzzer's hook would abort on those caught panics, so report
    // them without aborting. A panic the plugin lets through still fails the run.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = protoc_gen_goomerang::plugin::run(data);
});
