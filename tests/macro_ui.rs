//! `#[goomerang::handler]` mistakes give errors on the right span (trybuild UI tests).
//!
//! The expected `.stderr` files were written with rustc 1.95; compiler messages change
//! between releases, so the compile-fail comparison runs on that toolchain only.

#[test]
fn handler_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass_*.rs");
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    if rustc.starts_with("rustc 1.95.") {
        cases.compile_fail("ui/fail_*.rs");
    } else {
        eprintln!("compile-fail UI cases pinned to rustc 1.95; this is {rustc}");
    }
}
