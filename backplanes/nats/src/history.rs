//! Topic history on JetStream: numbering each publish per topic, and reading a topic's kept messages back.
//!
//! Each message of a topic is stored on the topic's history subject with
//! two headers: `Goomerang-Epoch` (the name of the topic's history) and
//! `Goomerang-Offset`. A replica numbers a publish by reading the subject's
//! last message and storing the next offset with
//! `Nats-Expected-Last-Subject-Sequence`, so two replicas numbering the same
//! topic at once cannot give out one offset twice: the loser reads again
//! and retries. A subject with no message left (never used, or everything
//! aged out) starts a new epoch at offset 1.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use goomerang::pubsub::{BackplaneError, History, Stored, StoredMessage};

use crate::ENGINE;
use crate::subjects::Subjects;

/// The header naming a stored message's history.
pub(crate) const EPOCH: &str = "Goomerang-Epoch";
/// The header giving a stored message's offset.
pub(crate) const OFFSET: &str = "Goomerang-Offset";
/// Tries at numbering one publish while other replicas number the same topic.
const ATTEMPTS: usize = 8;
/// Topics whose tail this replica remembers, at most (forgotten all at once beyond).
const TAILS_KEPT: usize = 10_000;
/// The longest age a JetStream stream is given (a history rule may say more).
const LONGEST_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where a topic's history ends on JetStream.
#[derive(Clone, Debug)]
struct Tail {
    sequence: u64,
    epoch: String,
    offset: u64,
}

/// The JetStream side of a replica's history: the streams, and the tail of
/// each topic it has numbered.
#[derive(Debug)]
pub(crate) struct Store {
    js: jetstream::Context,
    subjects: Subjects,
    streams: Mutex<HashMap<(usize, u128), stream::Stream>>,
    tails: Mutex<HashMap<String, Tail>>,
}

impl Store {
    pub(crate) fn new(client: async_nats::Client, subjects: Subjects) -> Store {
        let mut js = jetstream::new(client);
        // A broker that is away fails a numbering fast, so the outgoing
        // queue does not wait on it for long.
        js.set_timeout(Duration::from_secs(2));
        Store {
            js,
            subjects,
            streams: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `frame` as the next message of `topic`'s history: its epoch and offset.
    pub(crate) async fn number(
        &self,
        topic: &str,
        rule: History,
        frame: &Bytes,
    ) -> Result<(String, u64), BackplaneError> {
        let subject = self.subject(topic, rule);
        let mut stream = self.stream(rule, false).await?;
        for _ in 0..ATTEMPTS {
            let known = lock(&self.tails).get(topic).cloned();
            let tail = match known {
                Some(tail) => tail,
                None => self.tail(&stream, &subject).await?.unwrap_or_else(|| Tail {
                    sequence: 0,
                    epoch: fresh_epoch(),
                    offset: 0,
                }),
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                tail.sequence.to_string().as_str(),
            );
            headers.insert(EPOCH, tail.epoch.as_str());
            headers.insert(OFFSET, (tail.offset + 1).to_string().as_str());
            let acked = match self
                .js
                .publish_with_headers(subject.clone(), headers, frame.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            match acked {
                Ok(ack) => {
                    let mut tails = lock(&self.tails);
                    if tails.len() >= TAILS_KEPT {
                        tails.clear();
                    }
                    let offset = tail.offset + 1;
                    tails.insert(
                        topic.to_owned(),
                        Tail {
                            sequence: ack.sequence,
                            epoch: tail.epoch.clone(),
                            offset,
                        },
                    );
                    return Ok((tail.epoch, offset));
                }
                // Another replica numbered the topic meanwhile: read again.
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    lock(&self.tails).remove(topic);
                }
                // The stream is gone (deleted by hand, say): make it again.
                Err(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                    lock(&self.tails).remove(topic);
                    stream = self.stream(rule, true).await?;
                }
                Err(err) => {
                    return Err(BackplaneError::with_source(
                        ENGINE,
                        format!("history of {topic}: message not stored"),
                        err,
                    ));
                }
            }
        }
        Err(BackplaneError::new(
            ENGINE,
            format!("history of {topic}: {ATTEMPTS} tries lost to other replicas numbering it"),
        ))
    }

    /// The messages of `topic`'s history kept on JetStream (those after
    /// `after`, if it names one of them); `None` if none is kept.
    pub(crate) async fn read(
        &self,
        topic: &str,
        after: u64,
        rule: History,
    ) -> Result<Option<Stored>, BackplaneError> {
        let subject = self.subject(topic, rule);
        let stream = self.stream(rule, false).await?;
        let Some(tail) = self.tail(&stream, &subject).await? else {
            return Ok(None);
        };
        let mut messages = Vec::new();
        let mut sequence = 0;
        while tail.offset > after && sequence < tail.sequence && messages.len() < rule.max_len {
            let message = stream
                .raw_message_builder()
                .sequence(sequence + 1)
                .next_by_subject(subject.clone())
                .send()
                .await
                .map_err(|err| {
                    BackplaneError::with_source(ENGINE, format!("history of {topic} not read"), err)
                })?;
            sequence = message.sequence;
            let (Some(epoch), Some(offset)) =
                (header(&message.headers, EPOCH), offset_of(&message.headers))
            else {
                continue;
            };
            if epoch != tail.epoch || offset <= after {
                continue;
            }
            let published = u128::try_from(message.time.unix_timestamp_nanos()).unwrap_or(0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let age = Duration::from_nanos(
                u64::try_from(now.saturating_sub(published)).unwrap_or(u64::MAX),
            );
            messages.push(StoredMessage::new(offset, age, message.payload));
        }
        Ok(Some(Stored::new(tail.epoch, tail.offset, messages)))
    }

    /// The subject keeping `topic`'s history under `rule`.
    fn subject(&self, topic: &str, rule: History) -> String {
        let (len, age_ms) = key(rule);
        self.subjects.history(len, age_ms, topic)
    }

    /// The subject's last message: where its history ends; `None` if it has none.
    async fn tail(
        &self,
        stream: &stream::Stream,
        subject: &str,
    ) -> Result<Option<Tail>, BackplaneError> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(last) => Ok(Some(Tail {
                sequence: last.sequence,
                epoch: header(&last.headers, EPOCH).unwrap_or_default().to_owned(),
                offset: offset_of(&last.headers).unwrap_or(0),
            })),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(BackplaneError::with_source(
                ENGINE,
                format!("history subject {subject} not read"),
                err,
            )),
        }
    }

    /// The stream for `rule`, made if missing (again, when `renew`).
    async fn stream(&self, rule: History, renew: bool) -> Result<stream::Stream, BackplaneError> {
        let key = key(rule);
        if !renew && let Some(stream) = lock(&self.streams).get(&key) {
            return Ok(stream.clone());
        }
        let (name, subjects) = self.subjects.history_stream(key.0, key.1);
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subjects],
                max_messages_per_subject: i64::try_from(rule.max_len).unwrap_or(i64::MAX),
                max_age: rule.max_age.clamp(Duration::from_millis(1), LONGEST_AGE),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|err| {
                BackplaneError::with_source(
                    ENGINE,
                    format!("JetStream stream {name} not made (is JetStream on: nats-server -js?)"),
                    err,
                )
            })?;
        lock(&self.streams).insert(key, stream.clone());
        Ok(stream)
    }
}

/// What identifies a history rule on the broker: its length and its age in ms.
fn key(rule: History) -> (usize, u128) {
    (rule.max_len, rule.max_age.as_millis())
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    Some(headers.get(name)?.as_str())
}

pub(crate) fn offset_of(headers: &HeaderMap) -> Option<u64> {
    header(headers, OFFSET)?.parse().ok()
}

/// A new history's name: random enough that no two histories share one.
fn fresh_epoch() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:016x}",
        (nanos as u64).rotate_left(23)
            ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
