//! `Presence`: who is subscribed to a topic, on this replica and across the cluster.

use std::sync::Arc;

use crate::conn::connection::Connection;

/// The connections subscribed to a topic (by any pattern that matches it),
/// as [`Server::presence`](crate::Server::presence) found them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// How many connections, on every replica that answered.
    pub count: usize,
    /// Some of them: at most the limit asked for, this replica's first.
    pub members: Vec<Present>,
    /// Whether every replica known to be alive answered in time (always
    /// true without a backplane). When false, `count` is a lower bound.
    pub complete: bool,
}

/// One connection in a [`Presence`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Present {
    /// The replica it is connected to: the backplane's id for it (0
    /// without a backplane).
    pub replica: u64,
    /// Its id on that replica ([`Connection::id`]).
    pub conn: u64,
    /// What `ServerBuilder::presence_label` said about it (empty without one),
    /// e.g. the user's name from its handshake state.
    pub label: String,
}

impl Present {
    /// A present connection (for backplane engines relaying other replicas' answers).
    pub fn new(replica: u64, conn: u64, label: impl Into<String>) -> Present {
        Present {
            replica,
            conn,
            label: label.into(),
        }
    }
}

/// One replica's part of a [`Presence`]: its count and up to the limit of its members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaPresence {
    /// How many of its connections are subscribed.
    pub count: usize,
    /// Up to the limit asked for.
    pub members: Vec<Present>,
}

impl ReplicaPresence {
    /// A replica's answer (for backplane engines).
    pub fn new(count: usize, members: Vec<Present>) -> ReplicaPresence {
        ReplicaPresence { count, members }
    }
}

/// What the other replicas said, as a backplane gathered it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemotePresence {
    /// One entry per replica that answered.
    pub replicas: Vec<ReplicaPresence>,
    /// Whether every replica known to be alive answered.
    pub complete: bool,
}

impl RemotePresence {
    /// The answers gathered, and whether they are all there were.
    pub fn new(replicas: Vec<ReplicaPresence>, complete: bool) -> RemotePresence {
        RemotePresence { replicas, complete }
    }
}

/// Labels a connection for presence lists.
pub(crate) type Label = Arc<dyn Fn(&Connection) -> String + Send + Sync>;

/// Puts this replica's part and the others' together.
pub(crate) fn merge(local: ReplicaPresence, remote: RemotePresence, limit: usize) -> Presence {
    let count = local.count + remote.replicas.iter().map(|r| r.count).sum::<usize>();
    let members = local
        .members
        .into_iter()
        .chain(remote.replicas.into_iter().flat_map(|r| r.members))
        .take(limit)
        .collect();
    Presence {
        count,
        members,
        complete: remote.complete,
    }
}
