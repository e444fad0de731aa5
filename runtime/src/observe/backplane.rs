//! `BackplaneStats`: what a backplane engine has done, as its `stats()` reports it and its metrics export it.

/// What a backplane engine has done so far: its `stats()`, and (with the
/// `metrics` feature) the `goomerang_backplane_*` series it exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Events this replica handed to the broker.
    pub forwarded: u64,
    /// Events from other replicas received.
    pub relayed: u64,
    /// Queue-group messages the broker gave this replica.
    pub grouped: u64,
    /// Events dropped on a full outgoing queue.
    pub dropped: u64,
    /// Events the broker refused or could not take.
    pub failed: u64,
    /// Queue-group messages no member took.
    pub unclaimed: u64,
    /// Broker connections lost.
    pub disconnects: u64,
    /// Broker connections that came back.
    pub reconnects: u64,
    /// Queue groups with a member on this replica.
    pub groups: u64,
    /// Other replicas alive, as this one knows.
    pub replicas: u64,
    /// Queue groups with a member anywhere in the cluster, as this replica
    /// last read them (engines whose broker tracks groups itself report
    /// this replica's own).
    pub known_groups: u64,
}

impl BackplaneStats {
    /// All counts zero; an engine sets the ones it keeps.
    pub fn new() -> BackplaneStats {
        BackplaneStats::default()
    }
}
