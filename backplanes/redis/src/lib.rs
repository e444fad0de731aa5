//! `goomerang-redis`: a goomerang [`Backplane`] on Redis, so that broadcasts,
//! publishes and queue groups span every replica of a server, and a session
//! store ([`RedisSessions`]) they share.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = goomerang_redis::Redis::builder("redis://127.0.0.1:6379")
//!     .namespace("chat")
//!     .connect()
//!     .await?;
//! let server = goomerang::Server::builder().backplane(redis).build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! What crosses replicas:
//! - `Server::broadcast`, `broadcast_except`, `publish`, and the clients'
//!   own BROADCAST and PUBLISH frames reach every matching connection on
//!   every replica, once, through Redis pub/sub. The replica where a message
//!   starts encodes it; the others relay its bytes as they came.
//! - Queue groups are balanced across the cluster: each message goes to one
//!   member of each matching group. Replicas with members register the group
//!   in a Redis hash; a publish pushes the message onto each matching group's
//!   list, and exactly one replica pops it (`BLPOP`) and hands it to one of
//!   its members.
//!
//! Delivery is at most once, in order from each replica. While Redis is
//! unreachable the connections reconnect with backoff (renewing their
//! subscriptions), local delivery carries on, and events wait in a bounded
//! queue ([`RedisBuilder::queue_capacity`]); what does not fit is dropped
//! and counted (`BackplaneStats::dropped`). Broker trouble reaches the server's
//! `on_error` hooks as `Incident::Backplane`.
//!
//! Every replica of one service must use the same namespace; the keys and
//! channels it uses are listed in the `keys` module's documentation.
//!
//! [`RedisSessions`] keeps connections' sessions in Redis, so that a client
//! resumes its session on whichever replica it reconnects to.
//!
//! Topics with history (`ServerBuilder::history`) are numbered and kept on
//! Redis: a script gives each publish the topic's next offset (and the
//! topic's epoch), appends it to the topic's stream (trimmed to the history
//! rule's length and age) and publishes it to every replica, the
//! publisher's included. Each replica keeps the history in memory too; one
//! that lacks what a recovering client asks for (it started late, or missed
//! messages while Redis was away) reads the stream. So a client recovers on
//! any replica.

mod keys;
mod sessions;

pub use sessions::RedisSessions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use goomerang::pubsub::{
    Backplane, BackplaneError, BackplaneStats, Event, History, HistoryFuture, Inbound, Peers,
    PresenceFuture, matches,
};
use prost::Message as _;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};

use crate::keys::{
    Envelope, Keys, NUMBER_AND_PUBLISH, READ_HISTORY, field, parse_field, parse_history,
    parse_numbered,
};

/// The name this engine reports its errors under.
const ENGINE: &str = "redis";
/// How long one `BLPOP` waits before the popper looks at its groups again.
const POP_WAIT_SECS: f64 = 0.2;
/// How long a history topic's counter and epoch stay after its last publish.
const NUMBERING_KEPT_MS: u64 = 7 * 24 * 3600 * 1000;
/// A queue-group message popped where no member took it goes back to the
/// front of its list for another replica, this many times at most.
const MAX_BOUNCES: u32 = 3;
/// How often a replica renews its registry entries and re-reads the others'.
const REGISTRY_REFRESH: Duration = Duration::from_secs(1);
/// A registry entry not renewed for this long is a dead replica's: ignored.
const REGISTRY_STALE: Duration = Duration::from_secs(10);

/// Redis connections used as a server's backplane. Build it with
/// [`Redis::builder`], then hand it to `ServerBuilder::backplane`.
#[derive(Debug)]
pub struct Redis {
    shared: Arc<Shared>,
    /// Events leaving this replica, shipped in order by one task.
    outbox: mpsc::Sender<Event>,
    /// Taken by `start`.
    parts: Mutex<Option<Parts>>,
}

/// What `start` sets running.
#[derive(Debug)]
struct Parts {
    outbox: mpsc::Receiver<Event>,
    pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    changes: mpsc::UnboundedReceiver<GroupChange>,
}

struct Shared {
    /// Publishes, list pushes, the registry.
    commands: ConnectionManager,
    /// Subscribed to the namespace's channels; renewed after reconnecting.
    subscriber: ConnectionManager,
    /// `BLPOP` only (it blocks its connection).
    popper: ConnectionManager,
    keys: Keys,
    /// This replica's id, in every envelope it sends.
    origin: u64,
    /// Who else is alive; presence questions in flight.
    peers: Peers,
    /// Most messages a group's list keeps while nobody pops.
    list_cap: usize,
    /// Every group with a member somewhere in the cluster.
    known: Mutex<Arc<Vec<(String, String)>>>,
    /// The groups with a member here, as registered.
    mine: Mutex<Vec<(String, String)>>,
    group_changes: mpsc::UnboundedSender<GroupChange>,
    inbound: OnceLock<Inbound>,
    counters: Counters,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("keys", &self.keys)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum GroupChange {
    Joined { pattern: String, group: String },
    Left { pattern: String, group: String },
}

/// Configures a [`Redis`] backplane.
#[derive(Debug)]
#[must_use]
pub struct RedisBuilder {
    url: String,
    namespace: String,
    queue_capacity: usize,
    list_cap: usize,
}

/// Why [`RedisBuilder::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The namespace is empty or holds whitespace.
    #[error("namespace {0:?} is empty or holds whitespace")]
    InvalidNamespace(String),
    /// The URL is not a Redis URL, the server could not be reached, or it
    /// refused a command (it must speak RESP3: Redis 6 or later).
    #[error("connecting to Redis at {url}: {source}")]
    Redis {
        /// The address given.
        url: String,
        /// What the Redis client said.
        #[source]
        source: redis::RedisError,
    },
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    relayed: AtomicU64,
    grouped: AtomicU64,
    unclaimed: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    groups: AtomicU64,
}

impl Redis {
    /// A backplane on the Redis server at `url` (`redis://host:port/db`,
    /// `rediss://` for TLS is not built in).
    pub fn builder(url: impl Into<String>) -> RedisBuilder {
        RedisBuilder {
            url: url.into(),
            namespace: "goomerang".to_owned(),
            queue_capacity: 65_536,
            list_cap: 10_000,
        }
    }

    /// Counts of what this backplane has done.
    pub fn stats(&self) -> BackplaneStats {
        self.handle().stats()
    }

    /// A handle that reaches this backplane after it has moved into the server.
    pub fn handle(&self) -> RedisHandle {
        RedisHandle(self.shared.clone())
    }
}

/// Reaches a [`Redis`] backplane from anywhere: its [`BackplaneStats`], and a barrier.
#[derive(Clone, Debug)]
pub struct RedisHandle(Arc<Shared>);

impl RedisHandle {
    /// The counts now.
    pub fn stats(&self) -> BackplaneStats {
        let c = &self.0.counters;
        let mut stats = BackplaneStats::new();
        stats.forwarded = c.forwarded.load(Ordering::Relaxed);
        stats.relayed = c.relayed.load(Ordering::Relaxed);
        stats.grouped = c.grouped.load(Ordering::Relaxed);
        stats.unclaimed = c.unclaimed.load(Ordering::Relaxed);
        stats.dropped = c.dropped.load(Ordering::Relaxed);
        stats.failed = c.failed.load(Ordering::Relaxed);
        stats.disconnects = c.disconnects.load(Ordering::Relaxed);
        stats.reconnects = c.reconnects.load(Ordering::Relaxed);
        stats.groups = c.groups.load(Ordering::Relaxed);
        stats.known_groups = lock(&self.0.known).len() as u64;
        stats.replicas = self.0.peers.alive() as u64;
        stats
    }

    /// Registers this backplane's counts into a `prometheus-client`
    /// registry (the one `Server::metrics().register` feeds):
    /// `goomerang_backplane_events_total{engine="redis", outcome}`,
    /// disconnects, reconnects, and the groups and replicas gauges.
    pub fn register(&self, registry: &mut goomerang::prometheus_client::registry::Registry) {
        let handle = self.clone();
        registry.register_collector(goomerang::pubsub::backplane_collector("redis", move || {
            handle.stats()
        }));
    }

    /// Waits until Redis answers on every connection (after a reconnection:
    /// with the subscriptions renewed), renews this replica's entries in the
    /// group registry and re-reads the others'.
    ///
    /// # Errors
    /// Redis did not answer.
    pub async fn flush(&self) -> Result<(), redis::RedisError> {
        for conn in [&self.0.commands, &self.0.subscriber] {
            redis::cmd("PING").exec_async(&mut conn.clone()).await?;
        }
        renew_registry(&self.0).await?;
        refresh_registry(&self.0).await
    }
}

impl RedisBuilder {
    /// The key and channel prefix all replicas of one service share (default
    /// `goomerang`); services sharing a Redis keep apart by it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Events waiting to be handed to Redis, at most (default 65,536). While
    /// Redis is unreachable they wait here; beyond it they are dropped and
    /// counted, and local delivery never waits.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// Messages a queue group's list keeps while no replica pops it (its
    /// members' replica died, say), the oldest dropped first (default 10,000).
    pub fn group_backlog(mut self, messages: usize) -> Self {
        self.list_cap = messages.max(1);
        self
    }

    /// Connects (three connections: commands, subscriptions, group pops)
    /// and subscribes, so that from the moment the server starts it receives
    /// what the other replicas send.
    pub async fn connect(self) -> Result<Redis, ConnectError> {
        if self.namespace.is_empty() || self.namespace.chars().any(char::is_whitespace) {
            return Err(ConnectError::InvalidNamespace(self.namespace));
        }
        let error = |source| ConnectError::Redis {
            url: self.url.clone(),
            source,
        };
        // Pub/sub on a reconnecting connection needs RESP3 push messages.
        let url = if self.url.contains("protocol=") {
            self.url.clone()
        } else if self.url.contains('?') {
            format!("{}&protocol=resp3", self.url)
        } else {
            format!("{}?protocol=resp3", self.url)
        };
        let client = redis::Client::open(url.as_str()).map_err(error)?;
        let config = || {
            redis::aio::ConnectionManagerConfig::new()
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(usize::MAX)
        };
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let commands = ConnectionManager::new_with_config(client.clone(), config())
            .await
            .map_err(error)?;
        let mut subscriber = ConnectionManager::new_with_config(
            client.clone(),
            config()
                .set_push_sender(push_tx)
                .set_automatic_resubscription(),
        )
        .await
        .map_err(error)?;
        let popper = ConnectionManager::new_with_config(
            client,
            // A BLPOP answers after its own timeout: no response timeout here.
            config().set_response_timeout(None),
        )
        .await
        .map_err(error)?;
        let keys = Keys::new(&self.namespace);
        for channel in [
            keys.broadcast(),
            keys.publish(),
            keys.control(),
            keys.peers(),
            keys.history(),
        ] {
            subscriber.subscribe(channel).await.map_err(error)?;
        }
        let (outbox, outbox_rx) = mpsc::channel(self.queue_capacity);
        let (group_changes, changes) = mpsc::unbounded_channel();
        let peers = Peers::with_random_id();
        let shared = Arc::new(Shared {
            commands,
            subscriber,
            popper,
            keys,
            origin: peers.origin(),
            peers,
            list_cap: self.list_cap,
            known: Mutex::new(Arc::new(Vec::new())),
            mine: Mutex::new(Vec::new()),
            group_changes,
            inbound: OnceLock::new(),
            counters: Counters::default(),
        });
        refresh_registry(&shared).await.map_err(error)?;
        Ok(Redis {
            shared,
            outbox,
            parts: Mutex::new(Some(Parts {
                outbox: outbox_rx,
                pushes,
                changes,
            })),
        })
    }
}

impl Backplane for Redis {
    fn start(&self, inbound: Inbound) {
        let Some(parts) = lock(&self.parts).take() else {
            tracing::warn!("a goomerang-redis backplane serves one server; started twice");
            return;
        };
        let _ = self.shared.inbound.set(inbound.clone());
        let (local_groups, groups_rx) = watch::channel(Vec::new());
        tokio::spawn(ship(self.shared.clone(), parts.outbox));
        tokio::spawn(relay(self.shared.clone(), inbound.clone(), parts.pushes));
        tokio::spawn(manage_groups(
            self.shared.clone(),
            inbound.clone(),
            parts.changes,
            local_groups,
        ));
        tokio::spawn(pop_groups(self.shared.clone(), inbound.clone(), groups_rx));
        tokio::spawn(refresh_periodically(self.shared.clone(), inbound));
    }

    fn forward(&self, event: Event) {
        if let Err(full) = self.outbox.try_send(event) {
            if let mpsc::error::TrySendError::Full(Event::History { topic, frame, .. })
            | mpsc::error::TrySendError::Closed(Event::History { topic, frame, .. }) = full
            {
                deliver_unnumbered(&self.shared, vec![(topic, frame)]);
            }
            let dropped = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            // Reported on the first drop and every 1,024th after it.
            if dropped.is_multiple_of(1024) {
                report(
                    &self.shared,
                    BackplaneError::new(
                        ENGINE,
                        format!("outgoing queue full: {} events dropped so far", dropped + 1),
                    ),
                );
            }
        }
    }

    fn balances_groups(&self) -> bool {
        true
    }

    fn numbers_history(&self) -> bool {
        true
    }

    fn history(&self, topic: &str, _after: u64, _rule: History) -> HistoryFuture {
        let shared = self.shared.clone();
        let [counter, epoch, stream] = shared.keys.numbering(topic);
        let topic = topic.to_owned();
        Box::pin(async move {
            let read: redis::Value = redis::cmd("EVAL")
                .arg(READ_HISTORY)
                .arg(3)
                .arg(counter)
                .arg(epoch)
                .arg(stream)
                .query_async(&mut shared.commands.clone())
                .await
                .map_err(|err| {
                    BackplaneError::with_source(ENGINE, format!("history of {topic} not read"), err)
                })?;
            if read == redis::Value::Nil {
                return Ok(None);
            }
            parse_history(read).map(Some).ok_or_else(|| {
                BackplaneError::new(ENGINE, format!("history of {topic}: unexpected answer"))
            })
        })
    }

    fn group_joined(&self, pattern: &str, group: &str) {
        let _ = self.shared.group_changes.send(GroupChange::Joined {
            pattern: pattern.to_owned(),
            group: group.to_owned(),
        });
    }

    fn group_left(&self, pattern: &str, group: &str) {
        let _ = self.shared.group_changes.send(GroupChange::Left {
            pattern: pattern.to_owned(),
            group: group.to_owned(),
        });
    }

    fn replica_id(&self) -> u64 {
        self.shared.origin
    }

    fn presence(&self, topic: &str, limit: usize) -> PresenceFuture {
        let shared = self.shared.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            let ask = shared.clone();
            shared
                .peers
                .gather(&topic, limit, move |question| {
                    tokio::spawn(async move { say(&ask, question).await });
                })
                .await
        })
    }
}

/// Publishes a message for the other replicas on the peers' channel.
async fn say(shared: &Shared, message: Bytes) {
    let _ = redis::cmd("PUBLISH")
        .arg(shared.keys.peers())
        .arg(message.as_ref())
        .exec_async(&mut shared.commands.clone())
        .await;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn report(shared: &Shared, error: BackplaneError) {
    tracing::warn!("{error}");
    if let Some(inbound) = shared.inbound.get() {
        inbound.report(error);
    }
}

/// Hands this replica's events to Redis, in order, as many as are waiting
/// in one pipeline (one round trip): a broadcast is a PUBLISH; a publish is
/// a PUBLISH plus an RPUSH and LTRIM per matching queue group. Ends when
/// the server is gone.
async fn ship(shared: Arc<Shared>, mut outbox: mpsc::Receiver<Event>) {
    /// Events per pipeline, at most.
    const BATCH: usize = 256;
    let mut conn = shared.commands.clone();
    let mut batch = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut batch, BATCH).await > 0 {
        let known = lock(&shared.known).clone();
        let mut pipe = redis::pipe();
        let mut events = 0u64;
        // History publishes in this batch: delivered here unnumbered if Redis fails them.
        let mut unnumbered = Vec::new();
        for event in batch.drain(..) {
            match event {
                Event::Broadcast { frame } => {
                    let envelope = envelope(&shared, String::new(), frame);
                    pipe.cmd("PUBLISH")
                        .arg(shared.keys.broadcast())
                        .arg(envelope)
                        .ignore();
                }
                Event::Publish { topic, frame } => {
                    let envelope = envelope(&shared, topic.clone(), frame);
                    push_to_groups(&shared, &mut pipe, &known, &topic, &envelope);
                    pipe.cmd("PUBLISH")
                        .arg(shared.keys.publish())
                        .arg(envelope)
                        .ignore();
                }
                Event::History { topic, rule, frame } => {
                    let [counter, epoch, stream] = shared.keys.numbering(&topic);
                    pipe.cmd("EVAL")
                        .arg(NUMBER_AND_PUBLISH)
                        .arg(4)
                        .arg(counter)
                        .arg(epoch)
                        .arg(shared.keys.history())
                        .arg(stream)
                        .arg(format!("{:016x}", rand_epoch()))
                        .arg(&topic)
                        .arg(frame.as_ref())
                        .arg(NUMBERING_KEPT_MS)
                        .arg(rule.max_len)
                        .arg(u64::try_from(rule.max_age.as_millis()).unwrap_or(u64::MAX / 2))
                        .ignore();
                    // Queue groups take the message as a plain publish's.
                    let envelope = envelope(&shared, topic.clone(), frame.clone());
                    push_to_groups(&shared, &mut pipe, &known, &topic, &envelope);
                    unnumbered.push((topic, frame));
                }
                // Group and numbered deliveries only ever come from Redis.
                _ => continue,
            }
            events += 1;
        }
        if events == 0 {
            continue;
        }
        match pipe.exec_async(&mut conn).await {
            Ok(()) => {
                shared
                    .counters
                    .forwarded
                    .fetch_add(events, Ordering::Relaxed);
            }
            Err(err) => {
                shared.counters.failed.fetch_add(events, Ordering::Relaxed);
                report(
                    &shared,
                    BackplaneError::with_source(
                        ENGINE,
                        format!("{events} events not handed to Redis"),
                        err,
                    ),
                );
                deliver_unnumbered(&shared, unnumbered);
            }
        }
    }
}

/// Queues a publish on `topic` for each matching queue group with a member
/// somewhere: one list push each, the list trimmed to its cap.
fn push_to_groups(
    shared: &Shared,
    pipe: &mut redis::Pipeline,
    known: &[(String, String)],
    topic: &str,
    envelope: &[u8],
) {
    for (pattern, group) in known.iter().filter(|(p, _)| matches(p, topic)) {
        let list = shared.keys.queue(&field(pattern, group));
        pipe.cmd("RPUSH").arg(&list).arg(envelope).ignore();
        pipe.cmd("LTRIM")
            .arg(&list)
            .arg(-(shared.list_cap as i64))
            .arg(-1)
            .ignore();
    }
}

/// History publishes Redis could not number still reach the local
/// subscribers, without a position (local delivery never waits on Redis).
fn deliver_unnumbered(shared: &Shared, events: Vec<(String, Bytes)>) {
    let Some(inbound) = shared.inbound.get() else {
        return;
    };
    for (topic, frame) in events {
        inbound.deliver(Event::Publish { topic, frame });
    }
}

fn rand_epoch() -> u64 {
    // The replica id is random; mixed with the time it makes a fresh epoch.
    now_ms().rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn envelope(shared: &Shared, topic: String, frame: Bytes) -> Vec<u8> {
    Envelope {
        origin: shared.origin,
        topic,
        frame,
        bounces: 0,
    }
    .encode_to_vec()
}

/// Delivers other replicas' broadcasts and publishes here, and follows the
/// subscriber connection's losses and renewals.
async fn relay(
    shared: Arc<Shared>,
    inbound: Inbound,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    let (broadcast, publish, control, peers, history) = (
        shared.keys.broadcast(),
        shared.keys.publish(),
        shared.keys.control(),
        shared.keys.peers(),
        shared.keys.history(),
    );
    let mut lost = false;
    while let Some(push) = pushes.recv().await {
        if !inbound.is_alive() {
            return;
        }
        match push.kind {
            redis::PushKind::Disconnection if !lost => {
                lost = true;
                shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                report(
                    &shared,
                    BackplaneError::new(ENGINE, "subscriber connection lost; reconnecting"),
                );
            }
            // The renewed subscriptions confirm, one per channel: the first
            // after a loss marks the way back.
            redis::PushKind::Subscribe if lost => {
                lost = false;
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Redis subscriber connection re-established");
            }
            redis::PushKind::Message => {
                let mut data = push.data.into_iter();
                let (
                    Some(redis::Value::BulkString(channel)),
                    Some(redis::Value::BulkString(payload)),
                ) = (data.next(), data.next())
                else {
                    continue;
                };
                if channel == history.as_bytes() {
                    // Every replica's, this one's included: delivered here
                    // only once numbered.
                    let Some((epoch, offset, topic, frame)) = parse_numbered(&payload) else {
                        report(
                            &shared,
                            BackplaneError::new(ENGINE, "undecodable history event dropped"),
                        );
                        continue;
                    };
                    shared.counters.relayed.fetch_add(1, Ordering::Relaxed);
                    let event = Event::Numbered {
                        topic,
                        epoch,
                        offset,
                        frame,
                    };
                    if inbound.deliver(event).is_none() {
                        return;
                    }
                    continue;
                }
                if channel == peers.as_bytes() {
                    if let Some(reply) = shared.peers.receive(&payload, &inbound) {
                        say(&shared, reply).await;
                    }
                    continue;
                }
                if channel == control.as_bytes() {
                    if let Err(err) = refresh_registry(&shared).await {
                        report(
                            &shared,
                            BackplaneError::with_source(ENGINE, "group registry not read", err),
                        );
                    }
                    continue;
                }
                let Ok(envelope) = Envelope::decode(Bytes::from(payload)) else {
                    report(
                        &shared,
                        BackplaneError::new(ENGINE, "undecodable event dropped"),
                    );
                    continue;
                };
                if envelope.origin == shared.origin {
                    continue;
                }
                let event = if channel == broadcast.as_bytes() {
                    Event::Broadcast {
                        frame: envelope.frame,
                    }
                } else if channel == publish.as_bytes() {
                    Event::Publish {
                        topic: envelope.topic,
                        frame: envelope.frame,
                    }
                } else {
                    continue;
                };
                shared.counters.relayed.fetch_add(1, Ordering::Relaxed);
                if inbound.deliver(event).is_none() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Re-reads which queue groups have a member anywhere: the registry's
/// entries renewed within [`REGISTRY_STALE`].
async fn refresh_registry(shared: &Shared) -> Result<(), redis::RedisError> {
    let entries: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(shared.keys.registry())
        .query_async(&mut shared.commands.clone())
        .await?;
    let fresh_since = now_ms().saturating_sub(REGISTRY_STALE.as_millis() as u64);
    let mut known: Vec<(String, String)> = entries
        .into_iter()
        .filter(|(_, renewed)| *renewed >= fresh_since)
        .filter_map(|(field, _)| parse_field(field.split_once(':')?.1))
        .collect();
    known.sort();
    known.dedup();
    *lock(&shared.known) = Arc::new(known);
    Ok(())
}

/// Renews this replica's registry entries (after a Redis restart, this is
/// what puts them back).
async fn renew_registry(shared: &Shared) -> Result<(), redis::RedisError> {
    let mine = lock(&shared.mine).clone();
    if mine.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(shared.keys.registry());
    for (pattern, group) in &mine {
        cmd.arg(entry(shared, pattern, group)).arg(now);
    }
    cmd.exec_async(&mut shared.commands.clone()).await
}

/// This replica's registry entry for a group.
fn entry(shared: &Shared, pattern: &str, group: &str) -> String {
    format!("{:016x}:{}", shared.origin, field(pattern, group))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Says hello, and renews and re-reads the registry, every [`REGISTRY_REFRESH`], so entries
/// come back after a Redis restart, a dead replica's age out, and a change
/// notice missed while Redis was away still takes effect.
async fn refresh_periodically(shared: Arc<Shared>, inbound: Inbound) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    while inbound.is_alive() {
        tick.tick().await;
        // "Alive", for the other replicas' presence questions.
        say(&shared, shared.peers.hello(first)).await;
        first = false;
        let _ = renew_registry(&shared).await;
        let _ = refresh_registry(&shared).await;
    }
}

/// Registers and unregisters this replica's queue groups, in order, and
/// tells the popper which lists to pop.
async fn manage_groups(
    shared: Arc<Shared>,
    inbound: Inbound,
    mut changes: mpsc::UnboundedReceiver<GroupChange>,
    local_groups: watch::Sender<Vec<(String, String)>>,
) {
    let mut conn = shared.commands.clone();
    while let Some(change) = changes.recv().await {
        if !inbound.is_alive() {
            break;
        }
        let (pattern, group, joined) = match change {
            GroupChange::Joined { pattern, group } => (pattern, group, true),
            GroupChange::Left { pattern, group } => (pattern, group, false),
        };
        let mut pipe = redis::pipe();
        if joined {
            pipe.cmd("HSET")
                .arg(shared.keys.registry())
                .arg(entry(&shared, &pattern, &group))
                .arg(now_ms())
                .ignore();
        } else {
            pipe.cmd("HDEL")
                .arg(shared.keys.registry())
                .arg(entry(&shared, &pattern, &group))
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(shared.keys.control())
            .arg("changed")
            .ignore();
        // Not registered now (Redis is away) is registered on the next renewal.
        if let Err(err) = pipe.exec_async(&mut conn).await {
            report(
                &shared,
                BackplaneError::with_source(
                    ENGINE,
                    format!("queue group {group:?} at {pattern:?} not (un)registered"),
                    err,
                ),
            );
        }
        let mine = {
            let mut mine = lock(&shared.mine);
            let key = (pattern, group);
            if joined {
                if !mine.contains(&key) {
                    mine.push(key);
                }
            } else {
                mine.retain(|k| *k != key);
            }
            mine.clone()
        };
        shared
            .counters
            .groups
            .store(mine.len() as u64, Ordering::Relaxed);
        let _ = local_groups.send(mine);
    }
    // The server is gone: take this replica's groups out of the registry.
    let mine = std::mem::take(&mut *lock(&shared.mine));
    if !mine.is_empty() {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(shared.keys.registry());
        for (pattern, group) in &mine {
            cmd.arg(entry(&shared, pattern, group));
        }
        let _ = cmd.exec_async(&mut conn).await;
    }
}

/// Pops the lists of the groups with a member here, and hands each message
/// to one of them. A BLPOP is never cancelled (a cancelled one could still
/// take a message): it waits a bounded time, and the loop then looks again
/// at which groups to pop.
async fn pop_groups(
    shared: Arc<Shared>,
    inbound: Inbound,
    mut groups: watch::Receiver<Vec<(String, String)>>,
) {
    let mut conn = shared.popper.clone();
    while inbound.is_alive() {
        let lists: HashMap<String, (String, String)> = groups
            .borrow_and_update()
            .iter()
            .map(|(p, g)| (shared.keys.queue(&field(p, g)), (p.clone(), g.clone())))
            .collect();
        if lists.is_empty() {
            if groups.changed().await.is_err() {
                return;
            }
            continue;
        }
        let popped: Result<Option<(String, Vec<u8>)>, _> = redis::cmd("BLPOP")
            .arg(lists.keys().collect::<Vec<_>>())
            .arg(POP_WAIT_SECS)
            .query_async(&mut conn)
            .await;
        let (list, payload) = match popped {
            Ok(Some(popped)) => popped,
            Ok(None) => continue,
            Err(err) => {
                tracing::debug!(error = %err, "BLPOP failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (Some((pattern, group)), Ok(envelope)) =
            (lists.get(&list), Envelope::decode(Bytes::from(payload)))
        else {
            continue;
        };
        shared.counters.grouped.fetch_add(1, Ordering::Relaxed);
        let event = Event::Group {
            topic: envelope.topic.clone(),
            pattern: pattern.clone(),
            group: group.clone(),
            frame: envelope.frame.clone(),
        };
        match inbound.deliver(event) {
            None => return,
            // Popped just as the group's last member here left (a BLPOP in
            // flight cannot be called back): another replica may have one.
            Some(0) if envelope.bounces < MAX_BOUNCES => {
                let again = Envelope {
                    bounces: envelope.bounces + 1,
                    ..envelope
                };
                let requeued = redis::cmd("LPUSH")
                    .arg(&list)
                    .arg(again.encode_to_vec())
                    .exec_async(&mut shared.commands.clone())
                    .await;
                if requeued.is_err() {
                    shared.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(0) => {
                shared.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
    }
}
