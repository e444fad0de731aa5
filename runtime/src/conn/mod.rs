//! One connection, in the order a frame travels: the `Connection` handle, the driver
//! (reader and writer), dispatch to handlers under the caps, and the outbound queue.

pub(crate) mod connection;
pub(crate) mod dispatch;
pub(crate) mod driver;
pub(crate) mod limit;
pub(crate) mod outbox;
pub(crate) mod peer;
