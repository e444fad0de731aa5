//! The wire envelope (`Frame`, `FrameKind`, `Status`), generated from `proto/goomerang/v1/frame.proto`.
#[rustfmt::skip]
mod goomerang_v1;
pub(crate) use goomerang_v1::*;
