//! The wire envelope.
mod goomerang_v1;
pub use goomerang_v1::*;
