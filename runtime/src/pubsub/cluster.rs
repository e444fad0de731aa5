//! `Peers`: what replicas say to each other besides events (who is alive, presence questions and answers), for backplane engines to carry.
//!
//! An engine gives every replica one shared channel on its broker (a NATS
//! subject, a Redis channel) and passes what arrives to
//! [`Peers::receive`], publishing whatever that returns. Replicas announce
//! themselves on start and every second ([`Peers::hello`]); one not heard
//! from for three seconds is taken for dead. A presence question goes to
//! everyone, and [`Peers::gather`] waits for an answer from every replica
//! alive, or half a second, whichever comes first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::pubsub::backplane::Inbound;
use crate::pubsub::presence::{Present, RemotePresence, ReplicaPresence};
use crate::sync::lock;

/// How often a replica says it is alive.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is taken for dead.
const ALIVE_FOR: Duration = Duration::from_secs(3);
/// How long a presence question waits for the replicas alive to answer.
const GATHER_FOR: Duration = Duration::from_millis(500);

/// A message between replicas (not an event: those carry frames).
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    /// The replica that sent it.
    #[prost(fixed64, tag = "1")]
    origin: u64,
    #[prost(oneof = "Body", tags = "2, 3, 4")]
    body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Body {
    /// "I am alive"; `true` asks the replicas that do not know it yet to say hello back.
    #[prost(bool, tag = "2")]
    Hello(bool),
    #[prost(message, tag = "3")]
    Question(Question),
    #[prost(message, tag = "4")]
    Answer(Answer),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Question {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(uint32, tag = "3")]
    limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    /// The replica that asked.
    #[prost(fixed64, tag = "1")]
    to: u64,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(uint64, tag = "3")]
    count: u64,
    #[prost(message, repeated, tag = "4")]
    members: Vec<Member>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Member {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(string, tag = "2")]
    label: String,
}

/// One replica's view of the others, and its presence questions in flight.
#[derive(Debug)]
pub struct Peers {
    origin: u64,
    /// When each other replica was last heard from.
    seen: Mutex<HashMap<u64, Instant>>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<(u64, ReplicaPresence)>>>,
    next_id: AtomicU64,
}

impl Peers {
    /// The view of the replica with id `origin`.
    pub fn new(origin: u64) -> Peers {
        Peers {
            origin,
            seen: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The view of a replica with a random id.
    pub fn with_random_id() -> Peers {
        Peers::new(rand::random())
    }

    /// This replica's id.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// "I am alive", to publish on start (`first`: asks the others to say
    /// hello back at once) and every [`HELLO_EVERY`].
    pub fn hello(&self, first: bool) -> Bytes {
        self.encode(Body::Hello(first))
    }

    /// How many other replicas are alive, as far as this one knows.
    pub fn alive(&self) -> usize {
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        seen.retain(|_, at| now.duration_since(*at) < ALIVE_FOR);
        seen.len()
    }

    /// Handles a message from the shared channel; returns what to publish in
    /// reply, if anything. Messages this replica sent are ignored, as is
    /// anything undecodable (a foreign publisher on the channel).
    pub fn receive(&self, bytes: &[u8], inbound: &Inbound) -> Option<Bytes> {
        let note = Note::decode(bytes).ok()?;
        if note.origin == self.origin {
            return None;
        }
        let new = lock(&self.seen)
            .insert(note.origin, Instant::now())
            .is_none();
        match note.body? {
            Body::Hello(asks_back) => (asks_back && new).then(|| self.hello(false)),
            Body::Question(question) => {
                let limit = question.limit as usize;
                let local = inbound.local_presence(&question.topic, limit)?;
                Some(
                    self.encode(Body::Answer(Answer {
                        to: note.origin,
                        id: question.id,
                        count: local.count as u64,
                        members: local
                            .members
                            .into_iter()
                            .map(|m| Member {
                                conn: m.conn,
                                label: m.label,
                            })
                            .collect(),
                    })),
                )
            }
            Body::Answer(answer) if answer.to == self.origin => {
                let members = answer
                    .members
                    .into_iter()
                    .map(|m| Present::new(note.origin, m.conn, m.label))
                    .collect();
                let part = ReplicaPresence::new(answer.count as usize, members);
                if let Some(tx) = lock(&self.pending).get(&answer.id) {
                    let _ = tx.send((note.origin, part));
                }
                None
            }
            Body::Answer(_) => None,
        }
    }

    /// Asks every replica who is subscribed to `topic` (`publish` sends the
    /// question on the shared channel) and waits for the answers of those
    /// alive, or half a second.
    pub async fn gather(
        &self,
        topic: &str,
        limit: usize,
        publish: impl FnOnce(Bytes),
    ) -> RemotePresence {
        let expected = self.alive();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut answers) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id, tx);
        publish(self.encode(Body::Question(Question {
            id,
            topic: topic.to_owned(),
            limit: limit.min(u32::MAX as usize) as u32,
        })));
        let mut got: HashMap<u64, ReplicaPresence> = HashMap::new();
        let deadline = Instant::now() + GATHER_FOR;
        while got.len() < expected {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((replica, part))) => {
                    got.insert(replica, part);
                }
                _ => break,
            }
        }
        lock(&self.pending).remove(&id);
        let complete = got.len() >= expected;
        let mut replicas: Vec<(u64, ReplicaPresence)> = got.into_iter().collect();
        replicas.sort_by_key(|(replica, _)| *replica);
        RemotePresence::new(replicas.into_iter().map(|(_, p)| p).collect(), complete)
    }

    fn encode(&self, body: Body) -> Bytes {
        Bytes::from(
            Note {
                origin: self.origin,
                body: Some(body),
            }
            .encode_to_vec(),
        )
    }
}
