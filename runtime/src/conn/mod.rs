//! One connection below the routing layer: the `Connection` handle, what all
//! connections of one endpoint share (`Core`), the handler caps, the
//! outbound queue and the writer that drains it into the socket, and the
//! sessions that outlive a connection.

pub(crate) mod calls;
pub(crate) mod close;
pub(crate) mod connection;
pub(crate) mod core;
pub(crate) mod limit;
pub(crate) mod outbox;
pub(crate) mod peer;
pub(crate) mod session;
pub(crate) mod writer;
