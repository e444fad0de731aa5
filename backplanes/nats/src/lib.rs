//! `goomerang-nats`: a goomerang [`Backplane`] on NATS, so that broadcasts,
//! publishes and queue groups span every replica of a server.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = goomerang_nats::Nats::builder("nats://127.0.0.1:4222")
//!     .namespace("chat")
//!     .connect()
//!     .await?;
//! let server = goomerang::Server::builder().backplane(nats).build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! What crosses replicas:
//! - `Server::broadcast`, `broadcast_except`, `publish`, and the clients'
//!   own BROADCAST and PUBLISH frames reach every matching connection on
//!   every replica, once. The replica where a message starts encodes it;
//!   the others relay its bytes as they came.
//! - Queue groups are balanced across the cluster: each message goes to one
//!   member of each matching group, on one replica (NATS queue
//!   subscriptions pick the replica, the replica picks the member).
//!
//! Delivery is NATS core's: at most once, in order from each replica. While
//! the broker is unreachable the client reconnects with backoff, local
//! delivery carries on, and events wait in a bounded queue
//! ([`NatsBuilder::queue_capacity`]); what does not fit is dropped and
//! counted (`BackplaneStats::dropped`). Broker trouble reaches the server's
//! `on_error` hooks as `Incident::Backplane`.
//!
//! Every replica of one service must use the same namespace; the subjects
//! it uses are listed in the `subjects` module's documentation.
//!
//! Topics with history (`ServerBuilder::history`) are numbered and kept in
//! JetStream (start nats-server with `-js`): each publish is stored as the
//! topic's next offset, in a stream per history rule limited to the rule's
//! length per topic and to its age, then sent to every replica. Each
//! replica keeps the history in memory too; one that lacks what a
//! recovering client asks for (it started late, or missed messages while
//! the broker was away) reads it from JetStream. So a client recovers on
//! any replica.

mod history;
mod subjects;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use goomerang::pubsub::{
    Backplane, BackplaneError, BackplaneStats, Event, HELLO_EVERY, History, HistoryFuture, Inbound,
    Peers, PresenceFuture,
};
use tokio::sync::mpsc;

use crate::subjects::Subjects;

/// The name this engine reports its errors under.
const ENGINE: &str = "nats";

/// A NATS connection (two, in fact: one for fan-out, one for queue groups)
/// used as a server's backplane. Build it with [`Nats::builder`], then hand
/// it to `ServerBuilder::backplane`.
#[derive(Debug)]
pub struct Nats {
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
    broadcasts: async_nats::Subscriber,
    plain: async_nats::Subscriber,
    numbered: async_nats::Subscriber,
    control: async_nats::Subscriber,
    groups: mpsc::UnboundedReceiver<GroupChange>,
}

#[derive(Debug)]
struct Shared {
    /// Fan-out: broadcasts and plain publishes. No echo, so a replica never
    /// gets its own events back.
    fan: async_nats::Client,
    /// Queue groups: with echo, since this replica may hold the member.
    grouped: async_nats::Client,
    subjects: Subjects,
    /// Topic history on JetStream.
    store: history::Store,
    /// Who else is alive; presence questions in flight.
    peers: Peers,
    /// Join and leave notices, applied in order by one task.
    group_changes: mpsc::UnboundedSender<GroupChange>,
    inbound: Arc<OnceLock<Inbound>>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
enum GroupChange {
    Joined { pattern: String, group: String },
    Left { pattern: String, group: String },
}

/// Configures a [`Nats`] backplane.
#[derive(Debug)]
#[must_use]
pub struct NatsBuilder {
    url: String,
    namespace: String,
    queue_capacity: usize,
}

/// Why [`NatsBuilder::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The namespace is empty or not one or more NATS subject tokens.
    #[error(
        "namespace {0:?} is not a NATS subject prefix (tokens without whitespace or wildcards)"
    )]
    InvalidNamespace(String),
    /// The broker could not be reached, or refused us.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        /// The address given.
        url: String,
        /// What the NATS client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The broker took the connection but not the subscriptions.
    #[error("subscribing on NATS at {url}: {source}")]
    Subscribe {
        /// The address given.
        url: String,
        /// What the NATS client said.
        #[source]
        source: async_nats::SubscribeError,
    },
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    relayed: AtomicU64,
    grouped: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    unclaimed: AtomicU64,
    disconnects: AtomicU64,
    /// `Connected` events of each connection, the first included.
    fan_connects: AtomicU64,
    group_connects: AtomicU64,
    groups: AtomicU64,
}

impl Nats {
    /// A backplane on the NATS server at `url` (e.g. `nats://127.0.0.1:4222`;
    /// several, comma-separated, for a NATS cluster).
    pub fn builder(url: impl Into<String>) -> NatsBuilder {
        NatsBuilder {
            url: url.into(),
            namespace: "goomerang".to_owned(),
            queue_capacity: 65_536,
        }
    }

    /// Counts of what this backplane has done.
    pub fn stats(&self) -> BackplaneStats {
        self.handle().stats()
    }

    /// A handle that reaches this backplane after it has moved into the server.
    pub fn handle(&self) -> NatsHandle {
        NatsHandle(self.shared.clone())
    }
}

/// Reaches a [`Nats`] backplane from anywhere: its [`BackplaneStats`], and a barrier.
#[derive(Clone, Debug)]
pub struct NatsHandle(Arc<Shared>);

impl NatsHandle {
    /// The counts now.
    pub fn stats(&self) -> BackplaneStats {
        let c = &self.0.counters;
        let connects = c
            .fan_connects
            .load(Ordering::Relaxed)
            .min(c.group_connects.load(Ordering::Relaxed));
        let mut stats = BackplaneStats::new();
        stats.forwarded = c.forwarded.load(Ordering::Relaxed);
        stats.relayed = c.relayed.load(Ordering::Relaxed);
        stats.grouped = c.grouped.load(Ordering::Relaxed);
        stats.dropped = c.dropped.load(Ordering::Relaxed);
        stats.failed = c.failed.load(Ordering::Relaxed);
        stats.unclaimed = c.unclaimed.load(Ordering::Relaxed);
        stats.disconnects = c.disconnects.load(Ordering::Relaxed);
        stats.reconnects = connects.saturating_sub(1);
        stats.groups = c.groups.load(Ordering::Relaxed);
        stats.replicas = self.0.peers.alive() as u64;
        // NATS tracks the cluster's queue groups itself: this replica's own.
        stats.known_groups = stats.groups;
        stats
    }

    /// Registers this backplane's counts into a `prometheus-client`
    /// registry (the one `Server::metrics().register` feeds):
    /// `goomerang_backplane_events_total{engine="nats", outcome}`,
    /// disconnects, reconnects, and the groups and replicas gauges.
    pub fn register(&self, registry: &mut goomerang::prometheus_client::registry::Registry) {
        let handle = self.clone();
        registry.register_collector(goomerang::pubsub::backplane_collector("nats", move || {
            handle.stats()
        }));
    }

    /// Waits until the broker has processed everything this backplane sent
    /// it so far: events, and the subscriptions it renews after reconnecting.
    ///
    /// # Errors
    /// The broker did not answer (it is unreachable, say).
    pub async fn flush(&self) -> Result<(), async_nats::client::FlushError> {
        self.0.fan.flush().await?;
        self.0.grouped.flush().await
    }
}

impl NatsBuilder {
    /// The subject prefix all replicas of one service share (default
    /// `goomerang`); services sharing a NATS server keep apart by it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Events waiting to be handed to NATS, at most (default 65,536). While
    /// the broker is unreachable they wait here; beyond it they are dropped
    /// and counted, and local delivery never waits.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// Connects and subscribes, so that from the moment the server starts it
    /// receives what the other replicas send.
    pub async fn connect(self) -> Result<Nats, ConnectError> {
        let valid = !self.namespace.is_empty()
            && self.namespace.split('.').all(|token| {
                !token.is_empty()
                    && token != "*"
                    && token != ">"
                    && !token.chars().any(char::is_whitespace)
            });
        if !valid {
            return Err(ConnectError::InvalidNamespace(self.namespace));
        }
        let inbound = Arc::new(OnceLock::new());
        let counters = Arc::new(Counters::default());
        let connect_error = |source| ConnectError::Connect {
            url: self.url.clone(),
            source,
        };
        let fan = options(&inbound, &counters, Role::Fan)
            .no_echo()
            .connect(self.url.as_str())
            .await
            .map_err(connect_error)?;
        let grouped = options(&inbound, &counters, Role::Groups)
            .connect(self.url.as_str())
            .await
            .map_err(connect_error)?;
        let subjects = Subjects::new(&self.namespace);
        let subscribe_error = |source| ConnectError::Subscribe {
            url: self.url.clone(),
            source,
        };
        let broadcasts = fan
            .subscribe(subjects.broadcast())
            .await
            .map_err(subscribe_error)?;
        let plain = fan
            .subscribe(subjects.all_plain())
            .await
            .map_err(subscribe_error)?;
        let numbered = fan
            .subscribe(subjects.all_numbered())
            .await
            .map_err(subscribe_error)?;
        let control = fan
            .subscribe(subjects.control())
            .await
            .map_err(subscribe_error)?;
        // The subscriptions are in place on the broker once it answered a ping.
        if let Err(err) = fan.flush().await {
            tracing::debug!(error = %err, "NATS flush after subscribing failed");
        }
        let (outbox, outbox_rx) = mpsc::channel(self.queue_capacity);
        let (group_changes, groups) = mpsc::unbounded_channel();
        Ok(Nats {
            shared: Arc::new(Shared {
                store: history::Store::new(fan.clone(), subjects.clone()),
                fan,
                grouped,
                subjects,
                peers: Peers::with_random_id(),
                group_changes,
                inbound,
                counters,
            }),
            outbox,
            parts: Mutex::new(Some(Parts {
                outbox: outbox_rx,
                broadcasts,
                plain,
                numbered,
                control,
                groups,
            })),
        })
    }
}

/// Which of the two NATS connections.
#[derive(Clone, Copy, Debug)]
enum Role {
    Fan,
    Groups,
}

/// Connection options: reconnect forever with capped exponential backoff,
/// and report connection events to the server.
fn options(
    inbound: &Arc<OnceLock<Inbound>>,
    counters: &Arc<Counters>,
    role: Role,
) -> async_nats::ConnectOptions {
    let (role, connects): (&'static str, fn(&Counters) -> &AtomicU64) = match role {
        Role::Fan => ("fan-out", |c| &c.fan_connects),
        Role::Groups => ("groups", |c| &c.group_connects),
    };
    let inbound = inbound.clone();
    let counters = counters.clone();
    async_nats::ConnectOptions::new()
        .name(format!("goomerang {role}"))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let exp = attempts.min(6) as u32;
            Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let inbound = inbound.clone();
            let counters = counters.clone();
            async move {
                let what = match &event {
                    async_nats::Event::Connected => {
                        connects(&counters).fetch_add(1, Ordering::Relaxed);
                        tracing::info!(role, "NATS connection (re)established");
                        return;
                    }
                    async_nats::Event::Disconnected => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        format!("{role} connection lost; reconnecting")
                    }
                    other => format!("{role} connection: {other}"),
                };
                tracing::warn!(role, "NATS: {what}");
                if let Some(inbound) = inbound.get() {
                    inbound.report(BackplaneError::new(ENGINE, what));
                }
            }
        })
}

impl Backplane for Nats {
    fn start(&self, inbound: Inbound) {
        let Some(parts) = self.parts.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            tracing::warn!("a goomerang-nats backplane serves one server; started twice");
            return;
        };
        let _ = self.shared.inbound.set(inbound.clone());
        tokio::spawn(ship(self.shared.clone(), parts.outbox));
        tokio::spawn(relay(
            self.shared.clone(),
            inbound.clone(),
            parts.broadcasts,
            parts.plain,
            parts.numbered,
        ));
        tokio::spawn(manage_groups(
            self.shared.clone(),
            inbound.clone(),
            parts.groups,
        ));
        tokio::spawn(converse(self.shared.clone(), inbound, parts.control));
    }

    fn forward(&self, event: Event) {
        if self.outbox.try_send(event).is_err() {
            let dropped = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            // Reported on the first drop and every 1,024th after it.
            if dropped.is_multiple_of(1024)
                && let Some(inbound) = self.shared.inbound.get()
            {
                inbound.report(BackplaneError::new(
                    ENGINE,
                    format!("outgoing queue full: {} events dropped so far", dropped + 1),
                ));
            }
        }
    }

    fn balances_groups(&self) -> bool {
        true
    }

    fn numbers_history(&self) -> bool {
        true
    }

    fn history(&self, topic: &str, after: u64, rule: History) -> HistoryFuture {
        let shared = self.shared.clone();
        let topic = topic.to_owned();
        Box::pin(async move { shared.store.read(&topic, after, rule).await })
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
        self.shared.peers.origin()
    }

    fn presence(&self, topic: &str, limit: usize) -> PresenceFuture {
        let shared = self.shared.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            let ask = shared.clone();
            shared
                .peers
                .gather(&topic, limit, move |question| {
                    tokio::spawn(async move {
                        let _ = ask.fan.publish(ask.subjects.control(), question).await;
                    });
                })
                .await
        })
    }
}

/// Says hello now and every second, and answers the other replicas
/// (presence questions, and hellos from newcomers).
async fn converse(shared: Arc<Shared>, inbound: Inbound, mut control: async_nats::Subscriber) {
    let subject = shared.subjects.control();
    let hello = tokio::spawn({
        let shared = shared.clone();
        let inbound = inbound.clone();
        let subject = subject.clone();
        async move {
            let mut first = true;
            let mut tick = tokio::time::interval(HELLO_EVERY);
            while inbound.is_alive() {
                tick.tick().await;
                let _ = shared
                    .fan
                    .publish(subject.clone(), shared.peers.hello(first))
                    .await;
                first = false;
            }
        }
    });
    while let Some(message) = control.next().await {
        if !inbound.is_alive() {
            break;
        }
        if let Some(reply) = shared.peers.receive(&message.payload, &inbound) {
            let _ = shared.fan.publish(subject.clone(), reply).await;
        }
    }
    hello.abort();
}

/// Hands this replica's events to NATS, in order. Ends when the server (and
/// with it the sending half) is gone.
async fn ship(shared: Arc<Shared>, mut outbox: mpsc::Receiver<Event>) {
    while let Some(event) = outbox.recv().await {
        let sent = match event {
            Event::Broadcast { frame } => shared
                .fan
                .publish(shared.subjects.broadcast(), frame)
                .await
                .map_err(|e| not_handed("broadcast", e)),
            Event::Publish { topic, frame } => {
                let plain = shared
                    .fan
                    .publish(shared.subjects.plain(&topic), frame.clone())
                    .await;
                let grouped = shared
                    .grouped
                    .publish(shared.subjects.group(&topic), frame)
                    .await;
                plain.and(grouped).map_err(|e| not_handed("publish", e))
            }
            Event::History { topic, rule, frame } => number(&shared, topic, rule, frame).await,
            // Group and numbered deliveries only ever come from NATS.
            _ => Ok(()),
        };
        match sent {
            Ok(()) => {
                shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(inbound) = shared.inbound.get() {
                    inbound.report(err);
                }
            }
        }
    }
}

fn not_handed(what: &str, err: async_nats::PublishError) -> BackplaneError {
    BackplaneError::with_source(ENGINE, format!("{what} not handed to NATS"), err)
}

/// Numbers a history publish on JetStream, then delivers it here and sends
/// it to the other replicas; the topic's queue groups get it as a plain
/// publish. If it could not be numbered (the broker is away), it still
/// reaches the local subscribers, without a position.
async fn number(
    shared: &Shared,
    topic: String,
    rule: History,
    frame: Bytes,
) -> Result<(), BackplaneError> {
    let grouped = shared
        .grouped
        .publish(shared.subjects.group(&topic), frame.clone())
        .await;
    match shared.store.number(&topic, rule, &frame).await {
        Ok((epoch, offset)) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(history::EPOCH, epoch.as_str());
            headers.insert(history::OFFSET, offset.to_string().as_str());
            let sent = shared
                .fan
                .publish_with_headers(shared.subjects.numbered(&topic), headers, frame.clone())
                .await;
            if let Some(inbound) = shared.inbound.get() {
                inbound.deliver(Event::Numbered {
                    topic,
                    epoch,
                    offset,
                    frame,
                });
            }
            sent.and(grouped)
                .map_err(|e| not_handed("history publish", e))
        }
        Err(err) => {
            if let Some(inbound) = shared.inbound.get() {
                inbound.deliver(Event::Publish { topic, frame });
            }
            Err(err)
        }
    }
}

/// Delivers other replicas' broadcasts, plain publishes and numbered history publishes here.
async fn relay(
    shared: Arc<Shared>,
    inbound: Inbound,
    broadcasts: async_nats::Subscriber,
    plain: async_nats::Subscriber,
    numbered: async_nats::Subscriber,
) {
    let mut incoming =
        futures_util::stream::select(futures_util::stream::select(broadcasts, plain), numbered);
    while let Some(message) = incoming.next().await {
        let subject = message.subject.as_str();
        let event = if let Some(topic) = shared.subjects.topic_of(subject) {
            Event::Publish {
                topic: topic.to_owned(),
                frame: message.payload,
            }
        } else if let Some(topic) = shared.subjects.numbered_topic_of(subject) {
            let headers = message.headers.unwrap_or_default();
            let (Some(epoch), Some(offset)) = (
                history::header(&headers, history::EPOCH),
                history::offset_of(&headers),
            ) else {
                inbound.report(BackplaneError::new(
                    ENGINE,
                    "history publish without a position dropped",
                ));
                continue;
            };
            Event::Numbered {
                topic: topic.to_owned(),
                epoch: epoch.to_owned(),
                offset,
                frame: message.payload,
            }
        } else {
            Event::Broadcast {
                frame: message.payload,
            }
        };
        shared.counters.relayed.fetch_add(1, Ordering::Relaxed);
        if inbound.deliver(event).is_none() {
            return;
        }
    }
}

/// Keeps one NATS queue subscription per queue group with a member here.
async fn manage_groups(
    shared: Arc<Shared>,
    inbound: Inbound,
    mut changes: mpsc::UnboundedReceiver<GroupChange>,
) {
    let mut running: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(change) = changes.recv().await {
        if !inbound.is_alive() {
            break;
        }
        match change {
            GroupChange::Joined { pattern, group } => {
                let subject = shared.subjects.group(&pattern);
                let queue = Subjects::queue_name(&pattern, &group);
                let subscriber = match shared.grouped.queue_subscribe(subject, queue).await {
                    Ok(subscriber) => subscriber,
                    Err(err) => {
                        inbound.report(BackplaneError::with_source(
                            ENGINE,
                            format!("queue group {group:?} at {pattern:?} not subscribed"),
                            err,
                        ));
                        continue;
                    }
                };
                if let Err(err) = shared.grouped.flush().await {
                    tracing::debug!(error = %err, "NATS flush after a queue subscription failed");
                }
                shared.counters.groups.fetch_add(1, Ordering::Relaxed);
                let task = tokio::spawn(serve_group(
                    shared.clone(),
                    inbound.clone(),
                    pattern.clone(),
                    group.clone(),
                    subscriber,
                ));
                if let Some(old) = running.insert((pattern, group), task) {
                    old.abort();
                    shared.counters.groups.fetch_sub(1, Ordering::Relaxed);
                }
            }
            GroupChange::Left { pattern, group } => {
                // Dropping the subscriber (with its task) unsubscribes.
                if let Some(task) = running.remove(&(pattern, group)) {
                    task.abort();
                    shared.counters.groups.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
    for task in running.into_values() {
        task.abort();
    }
}

/// Delivers what NATS picked this replica for to one member of the group.
async fn serve_group(
    shared: Arc<Shared>,
    inbound: Inbound,
    pattern: String,
    group: String,
    mut subscriber: async_nats::Subscriber,
) {
    let prefix_len = shared.subjects.group("").len();
    while let Some(message) = subscriber.next().await {
        let topic = message
            .subject
            .as_str()
            .get(prefix_len..)
            .unwrap_or_default()
            .to_owned();
        let event = Event::Group {
            topic,
            pattern: pattern.clone(),
            group: group.clone(),
            frame: Bytes::clone(&message.payload),
        };
        shared.counters.grouped.fetch_add(1, Ordering::Relaxed);
        match inbound.deliver(event) {
            None => return,
            Some(0) => {
                shared.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
    }
}
