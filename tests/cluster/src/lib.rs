//! What the replica binary and the cluster tests share: the control messages a test sends a replica.

/// `cluster.v1.Command`: asks a replica's server to fan a `Note` out, or
/// just to report its backplane's counts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// `broadcast`, `except` (broadcast to all but the asking connection),
    /// `publish`, `presence` (who is subscribed to `topic`, at most `limit`
    /// listed), `login` (a session holding `text`), `whoami` (the session's
    /// name, in `members`), `stats` (the counts after a barrier with the
    /// broker), or `counts` (the counts now, broker or not).
    #[prost(string, tag = "1")]
    pub op: String,
    /// The topic, for `publish`.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// The note's text.
    #[prost(string, tag = "3")]
    pub text: String,
    /// For `presence`: how many to list.
    #[prost(uint64, tag = "4")]
    pub limit: u64,
}

/// `cluster.v1.Ack`: what the replica did, and its backplane's counts after.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    /// Local connections the message was queued for.
    #[prost(uint64, tag = "1")]
    pub reached: u64,
    /// Events handed to the broker.
    #[prost(uint64, tag = "2")]
    pub forwarded: u64,
    /// Events from other replicas delivered here.
    #[prost(uint64, tag = "3")]
    pub relayed: u64,
    /// Events dropped on a full outgoing queue.
    #[prost(uint64, tag = "4")]
    pub dropped: u64,
    /// Queue-group subscriptions in place on the broker.
    #[prost(uint64, tag = "5")]
    pub groups: u64,
    /// Broker connections lost so far.
    #[prost(uint64, tag = "6")]
    pub disconnects: u64,
    /// Backplane incidents reported to `on_error` so far.
    #[prost(uint64, tag = "7")]
    pub incidents: u64,
    /// Queue-group messages handed to a member here.
    #[prost(uint64, tag = "8")]
    pub grouped: u64,
    /// Broker connections that came back.
    #[prost(uint64, tag = "9")]
    pub reconnects: u64,
    /// Queue groups with a member anywhere, as this replica knows them
    /// (NATS tracks them itself: there, this replica's own).
    #[prost(uint64, tag = "10")]
    pub known_groups: u64,
    /// Events the broker refused or could not take.
    #[prost(uint64, tag = "11")]
    pub failed: u64,
    /// Queue-group messages no member took.
    #[prost(uint64, tag = "12")]
    pub unclaimed: u64,
    /// Other replicas alive, as this one knows.
    #[prost(uint64, tag = "13")]
    pub replicas: u64,
    /// For `presence`: the count.
    #[prost(uint64, tag = "14")]
    pub present: u64,
    /// For `presence`: whether every replica alive answered.
    #[prost(bool, tag = "15")]
    pub complete: bool,
    /// For `presence`: the members listed, as their labels.
    #[prost(string, repeated, tag = "16")]
    pub members: Vec<String>,
}

impl prost::Name for Command {
    const NAME: &'static str = "Command";
    const PACKAGE: &'static str = "cluster.v1";
}

impl prost::Name for Ack {
    const NAME: &'static str = "Ack";
    const PACKAGE: &'static str = "cluster.v1";
}
