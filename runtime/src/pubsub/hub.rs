//! `Hub`: a server's live connections and topic table; broadcast and publish encode once and never wait on a recipient.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::config::SlowConsumer;
use crate::conn::connection::Connection;
use crate::error::Error;
use crate::hooks::Hooks;
use crate::incident::Incident;
use crate::pubsub::access::Access;
use crate::pubsub::backplane::{BackplaneError, Event, Inbound, Local, SharedBackplane};
use crate::pubsub::history::{Histories, History, Recovery};
use crate::pubsub::presence::{self, Label, Presence, Present, ReplicaPresence};
use crate::pubsub::topics::Table;
use crate::sync::lock;
use crate::wire::topic::Subscription;
use crate::wire::topic::{Position, has_wildcards};

/// RFC 6455 private-use close code sent to a connection dropped as a slow consumer.
pub const CLOSE_SLOW_CONSUMER: u16 = 4002;

/// How long a subscription waits for a topic's history from the broker
/// before it goes on with what this replica holds.
pub(crate) const HISTORY_FETCH_LIMIT: Duration = Duration::from_secs(2);

pub(crate) struct Hub {
    /// Live connections; each connection task removes itself when it ends.
    conns: Mutex<HashMap<u64, Connection>>,
    topics: Mutex<Table>,
    backplane: SharedBackplane,
    /// The backplane balances queue groups across replicas: local delivery
    /// leaves group members out, and group changes are reported to it.
    balanced_groups: bool,
    policy: SlowConsumer,
    max_subscriptions: usize,
    hooks: Hooks,
    /// Who may subscribe, publish and broadcast.
    access: Access,
    /// Says who a connection is, in presence lists.
    label: Option<Label>,
    /// Topic histories; the lock is held across a history topic's publish
    /// and a recovery, so they never interleave.
    histories: Mutex<Histories>,
    /// Whether any topic has a history (no lock taken otherwise).
    has_history: bool,
    /// The backplane numbers history messages on the broker: a publish on a
    /// history topic is delivered here when it comes back numbered.
    numbered_history: bool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &lock(&self.conns).len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl Hub {
    pub(crate) fn new(
        backplane: SharedBackplane,
        policy: SlowConsumer,
        max_subscriptions: usize,
        hooks: Hooks,
        access: Access,
        label: Option<Label>,
        history: Vec<(String, History)>,
    ) -> Hub {
        let backplane_numbers = backplane.numbers_history();
        Hub {
            conns: Mutex::new(HashMap::new()),
            topics: Mutex::new(Table::default()),
            balanced_groups: backplane.balances_groups(),
            backplane,
            policy,
            max_subscriptions,
            hooks,
            access,
            label,
            has_history: !history.is_empty(),
            numbered_history: backplane_numbers,
            histories: Mutex::new(Histories::new(history, backplane_numbers)),
        }
    }

    /// The server's policies for clients' pub/sub frames.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    pub(crate) fn register(&self, conn: &Connection) {
        lock(&self.conns).insert(conn.id(), conn.clone());
    }

    /// Forgets a connection and every subscription it held.
    /// Its subscriptions go first, so a connection no longer listed is in
    /// no topic either.
    pub(crate) fn unregister(&self, id: u64) {
        {
            let mut topics = lock(&self.topics);
            let subs = topics.remove_connection(id);
            for sub in &subs {
                self.group_changed(&mut topics, sub, false);
            }
        }
        lock(&self.conns).remove(&id);
    }

    pub(crate) fn connections(&self) -> Vec<Connection> {
        lock(&self.conns).values().cloned().collect()
    }

    pub(crate) fn connection(&self, id: u64) -> Option<Connection> {
        lock(&self.conns).get(&id).cloned()
    }

    pub(crate) fn subscribe(&self, conn: &Connection, sub: &Subscription) -> Result<bool, Error> {
        let mut topics = lock(&self.topics);
        if topics.count(conn.id()) >= self.max_subscriptions {
            return Err(Error::SubscriptionLimit {
                limit: self.max_subscriptions,
            });
        }
        let added = topics.subscribe(conn.id(), sub);
        if added {
            self.group_changed(&mut topics, sub, true);
        }
        Ok(added)
    }

    /// Subscribes; for a topic with history (no wildcards, no group) also
    /// says where it stands and, given `from`, first queues what came after
    /// it if all of that is kept. Nothing published meanwhile is lost or sent twice.
    ///
    /// With history numbered on a broker, a replica that does not hold the
    /// topic's history (it has not heard of the topic, or not of everything
    /// after `from`) first asks the backplane for the broker's, waiting at
    /// most [`HISTORY_FETCH_LIMIT`].
    pub(crate) async fn subscribe_at(
        &self,
        conn: &Connection,
        sub: &Subscription,
        from: Option<&Position>,
    ) -> Result<(bool, Option<Recovery>), Error> {
        let exact = sub.group.is_none() && !has_wildcards(&sub.pattern);
        if !self.has_history || !exact {
            return Ok((self.subscribe(conn, sub)?, None));
        }
        let topic = sub.pattern.as_str();
        let ask = {
            let mut histories = lock(&self.histories);
            histories
                .rule(topic)
                .filter(|rule| histories.needs_broker(topic, *rule, from))
        };
        if let Some(rule) = ask {
            let after = from.map_or(0, |from| from.offset);
            let fetched = tokio::time::timeout(
                HISTORY_FETCH_LIMIT,
                self.backplane.history(topic, after, rule),
            )
            .await;
            match fetched {
                Ok(Ok(Some(stored))) => {
                    // Delivered under the history lock, as numbered messages are.
                    let mut histories = lock(&self.histories);
                    for frame in histories.fill(topic, rule, stored) {
                        self.publish_local(topic, &frame);
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(err)) => self.report(err),
                Err(_) => self.report(BackplaneError::new(
                    "backplane",
                    format!("the history of {topic} did not come from the broker within {HISTORY_FETCH_LIMIT:?}"),
                )),
            }
        }
        self.subscribe_now(conn, sub, from)
    }

    /// [`subscribe_at`](Self::subscribe_at) with what this replica holds.
    fn subscribe_now(
        &self,
        conn: &Connection,
        sub: &Subscription,
        from: Option<&Position>,
    ) -> Result<(bool, Option<Recovery>), Error> {
        let mut histories = lock(&self.histories);
        let Some(rule) = histories.rule(&sub.pattern) else {
            drop(histories);
            return Ok((self.subscribe(conn, sub)?, None));
        };
        let added = self.subscribe(conn, sub)?;
        let (recovery, missed) = histories.recover(&sub.pattern, rule, from);
        for frame in &missed {
            if !self.deliver(conn, frame) {
                break;
            }
        }
        Ok((added, Some(recovery)))
    }

    pub(crate) fn unsubscribe(&self, conn: &Connection, sub: &Subscription) -> bool {
        let mut topics = lock(&self.topics);
        let removed = topics.unsubscribe(conn.id(), sub);
        if removed {
            self.group_changed(&mut topics, sub, false);
        }
        removed
    }

    /// Tells a group-balancing backplane that a group got its first local
    /// member or lost its last. Runs under the topic lock, so the backplane
    /// sees joins and leaves in the order they happened.
    fn group_changed(&self, topics: &mut Table, sub: &Subscription, joined: bool) {
        let Some(group) = sub.group.as_deref() else {
            return;
        };
        if !self.balanced_groups {
            return;
        }
        let members = topics.group_len(&sub.pattern, group);
        match (joined, members) {
            (true, 1) => self.backplane.group_joined(&sub.pattern, group),
            (false, 0) => self.backplane.group_left(&sub.pattern, group),
            _ => {}
        }
    }

    /// Who here is subscribed to `topic`: the count, and the first `limit`.
    pub(crate) fn local_presence(&self, topic: &str, limit: usize) -> ReplicaPresence {
        let ids = lock(&self.topics).subscribers_of(topic);
        let replica = self.backplane.replica_id();
        let members = ids
            .iter()
            .take(limit)
            .map(|&id| {
                let label = match (&self.label, self.connection(id)) {
                    (Some(label), Some(conn)) => label(&conn),
                    _ => String::new(),
                };
                Present::new(replica, id, label)
            })
            .collect();
        ReplicaPresence::new(ids.len(), members)
    }

    /// Who is subscribed to `topic` here and on the other replicas.
    pub(crate) async fn presence(&self, topic: &str, limit: usize) -> Presence {
        let local = self.local_presence(topic, limit);
        let remote = self.backplane.presence(topic, limit).await;
        presence::merge(local, remote, limit)
    }

    /// Delivers an encoded frame to every local connection (but `except`).
    pub(crate) fn broadcast_local(&self, frame: &Bytes, except: Option<u64>) -> usize {
        let targets: Vec<Connection> = lock(&self.conns)
            .values()
            .filter(|c| Some(c.id()) != except)
            .cloned()
            .collect();
        targets.iter().filter(|c| self.deliver(c, frame)).count()
    }

    /// Delivers an encoded frame to the local subscribers of `topic` (queue
    /// groups too, unless the backplane balances them).
    pub(crate) fn publish_local(&self, topic: &str, frame: &Bytes) -> usize {
        let ids = lock(&self.topics).route(topic, !self.balanced_groups);
        let targets: Vec<Connection> = {
            let conns = lock(&self.conns);
            ids.iter().filter_map(|id| conns.get(id).cloned()).collect()
        };
        targets.iter().filter(|c| self.deliver(c, frame)).count()
    }

    /// Delivers an encoded frame to one local member of a queue group.
    fn group_local(&self, pattern: &str, group: &str, frame: &Bytes) -> usize {
        let Some(id) = lock(&self.topics).pick(pattern, group) else {
            return 0;
        };
        let Some(conn) = self.connection(id) else {
            return 0;
        };
        usize::from(self.deliver(&conn, frame))
    }

    /// Broadcast from this replica: local delivery, then the backplane.
    pub(crate) fn broadcast(&self, frame: Bytes, except: Option<u64>) -> usize {
        let reached = self.broadcast_local(&frame, except);
        self.backplane.forward(Event::Broadcast { frame });
        reached
    }

    /// Publish from this replica: local delivery, then the backplane.
    /// On a topic with history, the frame first gets its position, and the
    /// history lock is held until it is queued for every local subscriber.
    pub(crate) fn publish(&self, topic: &str, frame: Bytes) -> usize {
        if self.has_history && self.numbered_history {
            let rule = lock(&self.histories).rule(topic);
            if let Some(rule) = rule {
                // Delivered here too once the broker has numbered it.
                self.backplane.forward(Event::History {
                    topic: topic.to_owned(),
                    rule,
                    frame,
                });
                return 0;
            }
        } else if self.has_history {
            let mut histories = lock(&self.histories);
            if let Some(rule) = histories.rule(topic) {
                let stamped = histories.append(topic, rule, &frame);
                let reached = self.publish_local(topic, &stamped);
                drop(histories);
                self.backplane.forward(Event::Publish {
                    topic: topic.to_owned(),
                    frame: stamped,
                });
                return reached;
            }
        }
        let reached = self.publish_local(topic, &frame);
        self.backplane.forward(Event::Publish {
            topic: topic.to_owned(),
            frame,
        });
        reached
    }

    /// Queues `frame` for `conn` without waiting. A full queue applies the
    /// slow-consumer policy; returns whether the frame was queued.
    fn deliver(&self, conn: &Connection, frame: &Bytes) -> bool {
        match conn.try_enqueue(frame.clone()) {
            Ok(()) => true,
            Err(Error::QueueFull) => {
                self.hooks.error(
                    &Incident::SlowConsumer {
                        conn: conn.id(),
                        disconnected: self.policy == SlowConsumer::Disconnect,
                    },
                    Some(conn),
                );
                if self.policy == SlowConsumer::Disconnect {
                    conn.abort(
                        CLOSE_SLOW_CONSUMER,
                        "slow consumer: outbound queue overflowed",
                    );
                }
                false
            }
            Err(_) => false,
        }
    }
}

impl Hub {
    /// Starts the backplane, handing it the way back into this hub.
    pub(crate) fn start_backplane(hub: &Arc<Hub>) {
        let local: Weak<dyn Local> = Arc::downgrade(hub) as Weak<dyn Local>;
        hub.backplane.start(Inbound::new(local));
    }
}

impl Local for Hub {
    fn deliver_local(&self, event: Event) -> usize {
        match event {
            Event::Broadcast { frame } => self.broadcast_local(&frame, None),
            Event::Publish { topic, frame } => self.publish_local(&topic, &frame),
            Event::Numbered {
                topic,
                epoch,
                offset,
                frame,
            } => {
                let mut histories = lock(&self.histories);
                let stamped = match histories.rule(&topic) {
                    Some(rule) => histories.keep_numbered(&topic, rule, &epoch, offset, &frame),
                    // Not a history topic here (replicas configured apart).
                    None => Some(frame),
                };
                // Delivered under the history lock, as an in-process publish is.
                stamped.map_or(0, |stamped| self.publish_local(&topic, &stamped))
            }
            // Only ever forwarded, never delivered.
            Event::History { .. } => 0,
            Event::Group {
                pattern,
                group,
                frame,
                ..
            } => self.group_local(&pattern, &group, &frame),
        }
    }

    fn report(&self, error: BackplaneError) {
        self.hooks.error(&Incident::Backplane(error), None);
    }

    fn local_presence(&self, topic: &str, limit: usize) -> ReplicaPresence {
        Hub::local_presence(self, topic, limit)
    }
}
