//! `#[goomerang::handler]` mistakes give errors on the right span (trybuild UI tests).
//!
//! Every expected `.stderr` holds only the macro's own error (its message and span), which
//! no compiler release rewrites, so the cases run on every toolchain.

#[test]
fn handler_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass_*.rs");
    cases.compile_fail("ui/fail_*.rs");
}
