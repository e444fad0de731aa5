//! What a frame is handed to: the router's tables, type-erased handlers, the
//! middleware chain, and the `Context` a handler sees.

pub(crate) mod context;
pub(crate) mod handler;
pub mod middleware;
pub(crate) mod router;
