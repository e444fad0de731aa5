//! `Backplane`: the seam through which broadcasts and publishes reach other server replicas (in-process by default).

use std::fmt;
use std::sync::{Arc, Weak};

use bytes::Bytes;

/// A fan-out event crossing replicas. The frame is fully encoded (a
/// goomerang `Frame` of kind MESSAGE) and is delivered to local connections as is.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Deliver to every connection.
    Broadcast {
        /// The encoded frame.
        frame: Bytes,
    },
    /// Deliver to the subscribers of `topic`.
    Publish {
        /// The (wildcard-free) topic.
        topic: String,
        /// The encoded frame.
        frame: Bytes,
    },
}

/// Connects a server's broadcast and pub/sub to other replicas of the same
/// service, so that a broadcast or publish on one replica reaches the
/// clients of all of them. Handlers and clients do not change.
///
/// The server calls [`start`](Backplane::start) once when it starts serving,
/// with the [`Inbound`] through which events from other replicas are delivered
/// locally, and [`forward`](Backplane::forward) for every event that
/// originates on this replica (after delivering it locally). `forward` must
/// not block: queue the event and ship it from a task of your own, and stop
/// that task when the `Inbound` reports the server gone.
///
/// The default, [`LocalOnly`], forwards nothing: one process, no replicas.
/// A Redis or NATS engine implements this trait with its pub/sub: publish
/// `Event`s on a channel, deliver what arrives through `Inbound`. Queue groups
/// are balanced per replica.
pub trait Backplane: Send + Sync + 'static {
    /// Called once when the server starts.
    fn start(&self, inbound: Inbound);
    /// Ships an event that originated here to the other replicas.
    fn forward(&self, event: Event);
}

/// Delivers events from other replicas to this server's connections.
#[derive(Clone)]
pub struct Inbound {
    local: Weak<dyn Local>,
}

/// Where an [`Inbound`] delivers: the server's own fan-out (the hub).
pub(crate) trait Local: Send + Sync {
    /// Delivers to the local connections the event is for; how many it reached.
    fn deliver_local(&self, event: Event) -> usize;
}

impl Inbound {
    pub(crate) fn new(local: Weak<dyn Local>) -> Inbound {
        Inbound { local }
    }

    /// Delivers `event` to the local connections it is for; returns how many
    /// it reached, or `None` once the server is gone (stop delivering then).
    pub fn deliver(&self, event: Event) -> Option<usize> {
        Some(self.local.upgrade()?.deliver_local(event))
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("server_alive", &(self.local.strong_count() > 0))
            .finish()
    }
}

/// The default backplane: a single process, nothing to forward.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

impl Backplane for LocalOnly {
    fn start(&self, _inbound: Inbound) {}
    fn forward(&self, _event: Event) {}
}

pub(crate) type SharedBackplane = Arc<dyn Backplane>;
