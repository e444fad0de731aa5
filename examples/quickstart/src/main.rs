//! The quickstart.
fn main() {}
