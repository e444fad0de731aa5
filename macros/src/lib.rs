//! Procedural macros for goomerang (re-exported by the `goomerang` crate).
