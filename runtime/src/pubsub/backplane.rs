//! `Backplane`: the seam through which broadcasts and publishes reach other server replicas (in-process by default).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::pubsub::history::History;
use crate::pubsub::presence::{RemotePresence, ReplicaPresence};

/// What [`Backplane::presence`] returns.
pub type PresenceFuture = Pin<Box<dyn Future<Output = RemotePresence> + Send + 'static>>;

/// What [`Backplane::history`] returns: the topic's history as the broker
/// keeps it, `None` if the broker knows nothing of the topic.
pub type HistoryFuture =
    Pin<Box<dyn Future<Output = Result<Option<Stored>, BackplaneError>> + Send + 'static>>;

/// A topic's history as the broker keeps it (see [`Backplane::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stored {
    /// The name of the topic's history.
    pub epoch: String,
    /// The last offset given out in it (kept or not).
    pub last: u64,
    /// The messages still kept, oldest first, with consecutive offsets
    /// ending at `last` (or fewer, if the newest are not kept).
    pub messages: Vec<StoredMessage>,
}

impl Stored {
    /// History `epoch`, numbered up to `last`, still keeping `messages` (oldest first).
    pub fn new(epoch: impl Into<String>, last: u64, messages: Vec<StoredMessage>) -> Stored {
        Stored {
            epoch: epoch.into(),
            last,
            messages,
        }
    }
}

/// One message of a [`Stored`] history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// Its offset.
    pub offset: u64,
    /// How long ago it was published.
    pub age: Duration,
    /// The encoded frame, without a position (as [`Event::History`] carried it).
    pub frame: Bytes,
}

impl StoredMessage {
    /// The message at `offset`, published `age` ago.
    pub fn new(offset: u64, age: Duration, frame: Bytes) -> StoredMessage {
        StoredMessage { offset, age, frame }
    }
}

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
    /// Deliver to the subscribers of `topic`. Queue groups are served here
    /// too unless the backplane [balances them](Backplane::balances_groups),
    /// in which case this reaches plain subscriptions only.
    Publish {
        /// The (wildcard-free) topic.
        topic: String,
        /// The encoded frame.
        frame: Bytes,
    },
    /// A publish on a topic with history, not yet numbered: a backplane
    /// that [numbers history](Backplane::numbers_history) gets this instead
    /// of [`Event::Publish`], has the broker give it the topic's next offset,
    /// and delivers it back to every replica (this one included) as
    /// [`Event::Numbered`]. Nothing was delivered locally yet. A backplane
    /// that [balances queue groups](Backplane::balances_groups) also serves
    /// the topic's groups with it, as for [`Event::Publish`].
    History {
        /// The topic.
        topic: String,
        /// The topic's history rule: how much the broker should keep.
        rule: History,
        /// The encoded frame, without a position.
        frame: Bytes,
    },
    /// A publish on a topic with history, numbered by the broker: every
    /// replica (the publisher's too) keeps it in its history and delivers it
    /// to its subscribers of `topic`.
    Numbered {
        /// The topic.
        topic: String,
        /// The name of the topic's history on the broker.
        epoch: String,
        /// The message's offset in it.
        offset: u64,
        /// The encoded frame, without a position.
        frame: Bytes,
    },
    /// Deliver to one member of the queue group `group` subscribed at
    /// `pattern` (which matches `topic`). A backplane that balances queue
    /// groups delivers this on exactly one replica that has a member.
    Group {
        /// The (wildcard-free) topic published to.
        topic: String,
        /// The pattern the group subscribed with.
        pattern: String,
        /// The group's name.
        group: String,
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
/// that task when the `Inbound` reports the server gone. A replica must not
/// deliver its own events back to itself: they were delivered locally already.
///
/// **Queue groups.** By default each replica balances its own members, so a
/// message reaches one member *per replica*. A backplane that returns `true`
/// from [`balances_groups`](Backplane::balances_groups) takes the groups
/// over: the server then leaves group members out of local delivery and of
/// [`Event::Publish`], tells the backplane when a group gets its first local
/// member and loses its last ([`group_joined`](Backplane::group_joined),
/// [`group_left`](Backplane::group_left)), and expects, for each published
/// message, one [`Event::Group`] per matching group delivered on exactly one
/// replica of the cluster (this one included).
///
/// The default, [`LocalOnly`], forwards nothing: one process, no replicas.
/// The `goomerang-nats` crate implements this trait on NATS.
pub trait Backplane: Send + Sync + 'static {
    /// Called once when the server starts.
    fn start(&self, inbound: Inbound);
    /// Ships an event that originated here to the other replicas.
    fn forward(&self, event: Event);
    /// Whether this backplane balances queue groups across the cluster (see
    /// the trait's documentation). Asked once, when the server is built.
    fn balances_groups(&self) -> bool {
        false
    }
    /// The queue group `group` at `pattern` got its first member on this
    /// replica. Called in order with [`group_left`](Backplane::group_left)
    /// for the same group, under the server's topic lock: must not block.
    fn group_joined(&self, pattern: &str, group: &str) {
        let _ = (pattern, group);
    }
    /// The queue group `group` at `pattern` lost its last member on this replica.
    fn group_left(&self, pattern: &str, group: &str) {
        let _ = (pattern, group);
    }
    /// Whether this backplane numbers the messages of topics with history
    /// on the broker, so offsets agree on every replica (see
    /// [`Event::History`]). Without it, `ServerBuilder::history` and a
    /// backplane do not go together. Asked once, when the server is built.
    fn numbers_history(&self) -> bool {
        false
    }
    /// The history of `topic` as the broker keeps it (only asked of a
    /// backplane that [numbers history](Backplane::numbers_history)). The
    /// server asks when a client wants to recover from a position it does
    /// not hold itself, after it joined the cluster late or missed messages
    /// while the broker was away, and when a replica first serves a topic.
    /// Messages at or before `after` may be left out. The default: the
    /// broker keeps nothing.
    fn history(&self, topic: &str, after: u64, rule: History) -> HistoryFuture {
        let _ = (topic, after, rule);
        Box::pin(std::future::ready(Ok(None)))
    }
    /// This replica's id in the cluster, as [`Present::replica`](crate::pubsub::Present)
    /// reports it (0 without a backplane).
    fn replica_id(&self) -> u64 {
        0
    }
    /// Asks the other replicas who is subscribed to `topic` (at most `limit`
    /// members each); [`Peers`](crate::pubsub::Peers) does the asking over
    /// any shared channel. The default: no other replicas.
    fn presence(&self, topic: &str, limit: usize) -> PresenceFuture {
        let _ = (topic, limit);
        Box::pin(std::future::ready(RemotePresence::new(Vec::new(), true)))
    }
}

/// Something a backplane could not do: reach its broker, ship or decode an
/// event. Reported through [`Inbound::report`] to the server's `on_error`
/// hooks as [`Incident::Backplane`](crate::Incident::Backplane) and counted
/// in `goomerang_errors_total{kind="backplane"}`.
#[derive(Debug, thiserror::Error)]
#[error("{engine} backplane: {what}")]
pub struct BackplaneError {
    engine: &'static str,
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackplaneError {
    /// What went wrong in the engine named `engine` (e.g. `"nats"`).
    pub fn new(engine: &'static str, what: impl Into<String>) -> BackplaneError {
        BackplaneError {
            engine,
            what: what.into(),
            source: None,
        }
    }

    /// The same, caused by `source`.
    pub fn with_source(
        engine: &'static str,
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BackplaneError {
        BackplaneError {
            engine,
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The engine that reported it.
    pub fn engine(&self) -> &'static str {
        self.engine
    }
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
    /// Reports a backplane failure to the server's error hooks.
    fn report(&self, error: BackplaneError);
    /// Who here is subscribed to `topic`, at most `limit` listed.
    fn local_presence(&self, topic: &str, limit: usize) -> ReplicaPresence;
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

    /// Reports a failure to the server's `on_error` hooks; `false` once the
    /// server is gone.
    pub fn report(&self, error: BackplaneError) -> bool {
        match self.local.upgrade() {
            Some(local) => {
                local.report(error);
                true
            }
            None => false,
        }
    }

    /// Who on this replica is subscribed to `topic` (at most `limit` listed),
    /// to answer another replica's presence question; `None` once the server is gone.
    pub fn local_presence(&self, topic: &str, limit: usize) -> Option<ReplicaPresence> {
        Some(self.local.upgrade()?.local_presence(topic, limit))
    }

    /// Whether the server is still running (stop delivering once it is not).
    pub fn is_alive(&self) -> bool {
        self.local.strong_count() > 0
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
