//! The wire: the frame codec, messages and their metadata, status codes, and the generated envelope.

pub(crate) mod control;
pub(crate) mod frame;
pub(crate) mod message;
pub(crate) mod proto;
pub(crate) mod reply;
pub(crate) mod status;
pub(crate) mod topic;
