//! Topic history: the last messages of each topic with positions (epoch, offset), so a subscriber that comes back can recover what it missed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::pubsub::backplane::{Stored, StoredMessage};
use crate::sync::lock;
use crate::wire::frame;
use crate::wire::topic::Position;

/// How much of a topic's past the server keeps (see
/// `ServerBuilder::history`): at most `max_len` messages, none older than `max_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// Messages kept per topic, at most.
    pub max_len: usize,
    /// How long a message is kept.
    pub max_age: Duration,
}

impl History {
    /// Keep up to `max_len` messages per topic, each for up to `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> History {
        History {
            max_len: max_len.max(1),
            max_age,
        }
    }
}

/// What a subscription with history found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Where the topic stands now.
    pub(crate) position: Position,
    /// Whether every message after the asked position was sent.
    pub(crate) recovered: bool,
}

/// One topic's history.
#[derive(Debug)]
struct Log {
    epoch: String,
    /// The last offset given out.
    last: u64,
    /// (offset, when published, the stamped frame), oldest first.
    entries: VecDeque<(u64, Instant, Bytes)>,
    /// When something last happened here (a publish, a subscription).
    touched: Instant,
    /// When this replica started following the topic.
    since: Instant,
}

/// Of `messages` (oldest first), the run with consecutive offsets that ends
/// at `end`, oldest first: what comes after `end`, or before a hole, is left out.
fn run_ending_at<'a>(
    messages: impl DoubleEndedIterator<Item = &'a StoredMessage>,
    end: u64,
) -> impl Iterator<Item = &'a StoredMessage> {
    let mut expected = end;
    let mut run: Vec<_> = messages
        .rev()
        .skip_while(|m| m.offset > end)
        .take_while(|m| {
            let next = expected > 0 && m.offset == expected;
            expected = expected.saturating_sub(1);
            next
        })
        .collect();
    run.reverse();
    run.into_iter()
}

impl Log {
    /// Whether everything after `from` is kept: the oldest kept is at most
    /// the next one (or nothing was published since).
    fn covers(&self, from: &Position) -> bool {
        let oldest = self
            .entries
            .front()
            .map_or(self.last + 1, |(offset, ..)| *offset);
        !self.epoch.is_empty()
            && from.epoch == self.epoch
            && from.offset <= self.last
            && oldest <= from.offset + 1
    }
}

/// Every topic's history on this server, and the rules saying which
/// topics have one. The hub holds the lock across a publish's delivery and
/// a recovery's replay, so the two never interleave on a topic.
#[derive(Debug)]
pub(crate) struct Histories {
    rules: Vec<(String, History)>,
    /// This server's prefix for epochs; a restarted server has another.
    base: String,
    next_epoch: u64,
    logs: HashMap<String, Log>,
    appends: u64,
    /// The broker numbers messages (a backplane's history): a topic this
    /// replica has not heard of has no epoch yet (empty) rather than one of its own.
    numbered: bool,
}

impl Histories {
    pub(crate) fn new(rules: Vec<(String, History)>, numbered: bool) -> Histories {
        Histories {
            numbered,
            rules,
            base: format!("{:08x}", rand::random::<u32>()),
            next_epoch: 1,
            logs: HashMap::new(),
            appends: 0,
        }
    }

    /// The rule for `topic` (the first pattern that matches it).
    pub(crate) fn rule(&self, topic: &str) -> Option<History> {
        self.rules
            .iter()
            .find(|(pattern, _)| crate::wire::topic::matches(pattern, topic))
            .map(|(_, rule)| *rule)
    }

    /// Gives a publish on `topic` its position: returns `frame` stamped with
    /// it, which is what subscribers get and the history keeps.
    pub(crate) fn append(&mut self, topic: &str, rule: History, frame: &Bytes) -> Bytes {
        let now = Instant::now();
        self.appends += 1;
        if self.appends.is_multiple_of(1024) {
            self.sweep(now);
        }
        let log = self.log(topic, rule, now);
        log.last += 1;
        let stamped = frame::with_position(frame, log.last, &log.epoch);
        log.entries.push_back((log.last, now, stamped.clone()));
        while log.entries.len() > rule.max_len {
            log.entries.pop_front();
        }
        log.touched = now;
        stamped
    }

    /// Keeps a message the broker numbered (`offset` in history `epoch`);
    /// returns it stamped, or `None` for one already kept. A new epoch
    /// starts the topic's history again; a gap (messages this replica never
    /// got) drops what came before it, since history here is then incomplete.
    pub(crate) fn keep_numbered(
        &mut self,
        topic: &str,
        rule: History,
        epoch: &str,
        offset: u64,
        frame: &Bytes,
    ) -> Option<Bytes> {
        let now = Instant::now();
        let log = self.log(topic, rule, now);
        if log.epoch != epoch {
            log.epoch = epoch.to_owned();
            log.entries.clear();
            log.last = offset.saturating_sub(1);
        }
        if offset <= log.last {
            return None;
        }
        if offset != log.last + 1 {
            log.entries.clear();
        }
        log.last = offset;
        let stamped = frame::with_position(frame, offset, epoch);
        log.entries.push_back((offset, now, stamped.clone()));
        while log.entries.len() > rule.max_len {
            log.entries.pop_front();
        }
        log.touched = now;
        Some(stamped)
    }

    /// Whether a subscription to `topic` (from `from`) needs the broker's
    /// history: this replica has not heard of the topic, or does not hold
    /// everything after `from`. Only for numbered histories.
    pub(crate) fn needs_broker(
        &mut self,
        topic: &str,
        rule: History,
        from: Option<&Position>,
    ) -> bool {
        if !self.numbered {
            return false;
        }
        let log = self.log(topic, rule, Instant::now());
        log.epoch.is_empty() || from.is_some_and(|from| !log.covers(from))
    }

    /// Takes in the broker's history of `topic`. Of the same history, what
    /// is older than what this replica keeps fills in before it (newer
    /// messages are on their way here as [`Event::Numbered`]); another (or
    /// a first) history replaces what this replica had. Returns the stamped
    /// messages of a replacing history published since this replica began
    /// following the topic: its subscribers have not had them (their
    /// [`Event::Numbered`] is still on its way, or was lost), and the caller
    /// delivers them; when they do arrive they are known and skipped.
    ///
    /// [`Event::Numbered`]: crate::pubsub::Event::Numbered
    pub(crate) fn fill(&mut self, topic: &str, rule: History, stored: Stored) -> Vec<Bytes> {
        let now = Instant::now();
        let log = self.log(topic, rule, now);
        let stamp = |offset: u64, age: Duration, frame: &Bytes, epoch: &str| {
            (
                offset,
                now.checked_sub(age).unwrap_or(now),
                frame::with_position(frame, offset, epoch),
            )
        };
        let fresh = stored
            .messages
            .iter()
            .filter(|m| m.age <= rule.max_age && m.offset <= stored.last);
        let mut unseen = Vec::new();
        if log.epoch != stored.epoch {
            let following = now.duration_since(log.since);
            unseen = fresh
                .clone()
                .filter(|m| m.age < following)
                .map(|m| frame::with_position(&m.frame, m.offset, &stored.epoch))
                .collect();
            log.epoch = stored.epoch.clone();
            log.last = stored.last;
            log.entries = run_ending_at(fresh, stored.last)
                .map(|m| stamp(m.offset, m.age, &m.frame, &stored.epoch))
                .collect();
        } else {
            // Prepend the consecutive run that ends just before what is kept here.
            let first = log
                .entries
                .front()
                .map_or(log.last + 1, |(offset, ..)| *offset);
            let older: Vec<_> = run_ending_at(fresh, first.saturating_sub(1)).collect();
            for m in older.into_iter().rev() {
                log.entries
                    .push_front(stamp(m.offset, m.age, &m.frame, &stored.epoch));
            }
        }
        while log.entries.len() > rule.max_len {
            log.entries.pop_front();
        }
        log.touched = now;
        unseen
    }

    /// For a subscription to `topic`: where it stands, and, if `from` is
    /// given, the stamped frames after it when they are all still kept.
    pub(crate) fn recover(
        &mut self,
        topic: &str,
        rule: History,
        from: Option<&Position>,
    ) -> (Recovery, Vec<Bytes>) {
        let now = Instant::now();
        let log = self.log(topic, rule, now);
        log.touched = now;
        let position = Position::new(log.epoch.clone(), log.last);
        let Some(from) = from else {
            return (
                Recovery {
                    position,
                    recovered: false,
                },
                Vec::new(),
            );
        };
        let recoverable = log.covers(from);
        let missed = if recoverable {
            log.entries
                .iter()
                .filter(|(offset, ..)| *offset > from.offset)
                .map(|(.., frame)| frame.clone())
                .collect()
        } else {
            Vec::new()
        };
        (
            Recovery {
                position,
                recovered: recoverable,
            },
            missed,
        )
    }

    /// The topic's log, aged; a new one (with a new epoch) if it had none or
    /// its history was lost to age (nothing kept, and idle for `max_age`).
    fn log(&mut self, topic: &str, rule: History, now: Instant) -> &mut Log {
        let lost = match self.logs.get_mut(topic) {
            None => true,
            Some(log) => {
                while log
                    .entries
                    .front()
                    .is_some_and(|(_, at, _)| now.duration_since(*at) > rule.max_age)
                {
                    log.entries.pop_front();
                }
                log.entries.is_empty() && now.duration_since(log.touched) > rule.max_age
            }
        };
        if lost {
            let epoch = if self.numbered {
                String::new()
            } else {
                self.next_epoch += 1;
                format!("{}-{}", self.base, self.next_epoch - 1)
            };
            self.logs.insert(
                topic.to_owned(),
                Log {
                    epoch,
                    last: 0,
                    entries: VecDeque::new(),
                    touched: now,
                    since: now,
                },
            );
        }
        self.logs.get_mut(topic).expect("present or inserted above")
    }

    /// Forgets the logs of topics whose history has aged out entirely.
    fn sweep(&mut self, now: Instant) {
        let rules = &self.rules;
        self.logs.retain(|topic, log| {
            let Some((_, rule)) = rules
                .iter()
                .find(|(pattern, _)| crate::wire::topic::matches(pattern, topic))
            else {
                return false;
            };
            log.entries
                .back()
                .is_some_and(|(_, at, _)| now.duration_since(*at) <= rule.max_age)
                || now.duration_since(log.touched) <= rule.max_age
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histories() -> Histories {
        Histories::new(
            vec![(
                "chat.*".to_owned(),
                History::new(3, Duration::from_secs(60)),
            )],
            false,
        )
    }

    fn rule() -> History {
        History::new(3, Duration::from_secs(60))
    }

    #[test]
    fn offsets_count_per_topic_and_the_history_is_bounded() {
        let mut h = histories();
        assert_eq!(h.rule("chat.a"), Some(rule()));
        assert_eq!(h.rule("news.a"), None);
        for _ in 0..5 {
            h.append("chat.a", rule(), &Bytes::from_static(b"x"));
        }
        h.append("chat.b", rule(), &Bytes::from_static(b"y"));
        let (a, _) = h.recover("chat.a", rule(), None);
        let (b, _) = h.recover("chat.b", rule(), None);
        assert_eq!((a.position.offset, b.position.offset), (5, 1));
        assert_ne!(a.position.epoch, b.position.epoch);
        // Kept: 3, 4, 5. From 2: recoverable (3 is kept); from 1: not.
        let (r, missed) = h.recover(
            "chat.a",
            rule(),
            Some(&Position::new(a.position.epoch.clone(), 2)),
        );
        assert!(r.recovered);
        assert_eq!(missed.len(), 3);
        let (r, missed) = h.recover(
            "chat.a",
            rule(),
            Some(&Position::new(a.position.epoch.clone(), 1)),
        );
        assert!(!r.recovered);
        assert!(missed.is_empty());
        // Up to date: recovered, nothing to send. Another epoch, or ahead: not.
        let (r, missed) = h.recover(
            "chat.a",
            rule(),
            Some(&Position::new(a.position.epoch.clone(), 5)),
        );
        assert!(r.recovered && missed.is_empty());
        let (r, _) = h.recover("chat.a", rule(), Some(&Position::new("other", 5)));
        assert!(!r.recovered);
        let (r, _) = h.recover("chat.a", rule(), Some(&Position::new(a.position.epoch, 6)));
        assert!(!r.recovered);
    }

    #[test]
    fn numbered_messages_keep_the_brokers_positions_and_notice_gaps_and_new_epochs() {
        let mut h = Histories::new(vec![("chat.*".to_owned(), rule())], true);
        let (r, _) = h.recover("chat.a", rule(), None);
        assert_eq!(
            r.position,
            Position::new("", 0),
            "nothing heard yet: no epoch"
        );
        let frame = Bytes::from_static(b"x");
        // Joined late: 7 is the first this replica sees.
        assert!(h.keep_numbered("chat.a", rule(), "E", 7, &frame).is_some());
        assert!(h.keep_numbered("chat.a", rule(), "E", 8, &frame).is_some());
        assert!(
            h.keep_numbered("chat.a", rule(), "E", 8, &frame).is_none(),
            "duplicate"
        );
        let from = |offset| Position::new("E", offset);
        assert!(h.recover("chat.a", rule(), Some(&from(6))).0.recovered);
        assert!(
            !h.recover("chat.a", rule(), Some(&from(5))).0.recovered,
            "before it joined"
        );
        // A gap: 9 and 10 never came. What is kept starts again at 11.
        assert!(h.keep_numbered("chat.a", rule(), "E", 11, &frame).is_some());
        assert!(!h.recover("chat.a", rule(), Some(&from(8))).0.recovered);
        let (r, missed) = h.recover("chat.a", rule(), Some(&from(10)));
        assert!(r.recovered);
        assert_eq!(missed.len(), 1);
        // The broker lost its history: a new epoch starts over.
        assert!(h.keep_numbered("chat.a", rule(), "F", 1, &frame).is_some());
        let (r, _) = h.recover("chat.a", rule(), Some(&from(11)));
        assert_eq!((r.recovered, r.position), (false, Position::new("F", 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_brokers_history_fills_in_before_what_is_kept_or_replaces_another() {
        let stored = |epoch: &str, last: u64, offsets: &[u64]| {
            let messages = offsets
                .iter()
                .map(|&o| StoredMessage::new(o, Duration::from_secs(1), Bytes::from_static(b"m")))
                .collect();
            Stored::new(epoch, last, messages)
        };
        let mut h = Histories::new(vec![("chat.*".to_owned(), rule())], true);
        let from = |epoch: &str, offset| Position::new(epoch, offset);
        // Never heard of: it needs the broker, and takes its history whole
        // (the last three, as the rule keeps three).
        assert!(h.needs_broker("chat.a", rule(), None));
        let unseen = h.fill("chat.a", rule(), stored("E", 9, &[5, 6, 7, 8, 9]));
        assert!(
            unseen.is_empty(),
            "all published before it followed the topic"
        );
        assert!(!h.needs_broker("chat.a", rule(), None));
        let (r, missed) = h.recover("chat.a", rule(), Some(&from("E", 6)));
        assert_eq!(
            (r.recovered, r.position, missed.len()),
            (true, from("E", 9), 3)
        );
        assert!(h.needs_broker("chat.a", rule(), Some(&from("E", 5))));

        // Same history, live from 10 on after a gap (11 only): the broker's
        // 10 fills in before it; what is newer than 11 is not taken (it is
        // on its way), and nothing past a hole.
        let mut h = Histories::new(
            vec![(
                "chat.*".to_owned(),
                History::new(10, Duration::from_secs(60)),
            )],
            true,
        );
        let wide = History::new(10, Duration::from_secs(60));
        h.keep_numbered("chat.a", wide, "E", 11, &Bytes::from_static(b"m"));
        assert!(h.needs_broker("chat.a", wide, Some(&from("E", 8))));
        h.fill("chat.a", wide, stored("E", 12, &[7, 9, 10, 11, 12]));
        let (r, missed) = h.recover("chat.a", wide, Some(&from("E", 7)));
        assert!(!r.recovered, "8 is missing on the broker too");
        assert!(missed.is_empty());
        let (r, missed) = h.recover("chat.a", wide, Some(&from("E", 8)));
        assert_eq!(
            (r.recovered, r.position, missed.len()),
            (true, from("E", 11), 3)
        );
        // 12 arrives live, once.
        assert!(
            h.keep_numbered("chat.a", wide, "E", 12, &Bytes::from_static(b"m"))
                .is_some()
        );

        // The broker has another history (it lost the old one): it replaces
        // ours, and what was published in it since this replica followed the
        // topic (both, here: one second old, followed for two) is handed back
        // for delivery; when they arrive they are known.
        tokio::time::advance(Duration::from_secs(2)).await;
        let unseen = h.fill("chat.a", wide, stored("F", 2, &[1, 2]));
        assert_eq!(unseen.len(), 2);
        assert!(
            h.keep_numbered("chat.a", wide, "F", 2, &Bytes::from_static(b"m"))
                .is_none()
        );
        let (r, missed) = h.recover("chat.a", wide, Some(&from("F", 0)));
        assert_eq!(
            (r.recovered, r.position, missed.len()),
            (true, from("F", 2), 2)
        );
        // Messages older than the rule's age are not taken.
        let old = Stored::new(
            "G",
            3,
            vec![
                StoredMessage::new(2, Duration::from_secs(61), Bytes::from_static(b"m")),
                StoredMessage::new(3, Duration::from_secs(1), Bytes::from_static(b"m")),
            ],
        );
        h.fill("chat.a", wide, old);
        assert!(!h.recover("chat.a", wide, Some(&from("G", 1))).0.recovered);
        assert!(h.recover("chat.a", wide, Some(&from("G", 2))).0.recovered);
    }

    #[test]
    fn a_client_keeps_positions_with_an_epoch_only() {
        let positions = Positions::default();
        positions.record("chat.a", Position::new("", 0));
        assert_eq!(
            positions.get("chat.a"),
            None,
            "no history named: nothing to recover from"
        );
        positions.record("chat.a", Position::new("E", 3));
        positions.record("chat.a", Position::new("", 0));
        assert_eq!(positions.get("chat.a"), Some(Position::new("E", 3)));
        positions.forget("chat.a");
        assert_eq!(positions.get("chat.a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn age_trims_and_an_emptied_idle_history_gets_a_new_epoch() {
        let mut h = histories();
        let short = History::new(10, Duration::from_secs(5));
        h.append("chat.a", short, &Bytes::from_static(b"1"));
        tokio::time::advance(Duration::from_secs(3)).await;
        h.append("chat.a", short, &Bytes::from_static(b"2"));
        let (first, _) = h.recover("chat.a", short, None);
        tokio::time::advance(Duration::from_secs(3)).await;
        // The first aged out: from 0 cannot recover, from 1 can.
        let from = |offset| Position::new(first.position.epoch.clone(), offset);
        assert!(!h.recover("chat.a", short, Some(&from(0))).0.recovered);
        let (r, missed) = h.recover("chat.a", short, Some(&from(1)));
        assert!(r.recovered);
        assert_eq!(missed.len(), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        let (later, _) = h.recover("chat.a", short, None);
        assert_ne!(later.position.epoch, first.position.epoch, "history lost");
        assert_eq!(later.position.offset, 0);
    }
}

/// The last position a client saw on each topic, renewed with its subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Positions(std::sync::Mutex<HashMap<String, Position>>);

impl Positions {
    /// Keeps `position` as the last on `topic`; one without an epoch names
    /// no history (a replica that has not heard of the topic) and is not kept.
    pub(crate) fn record(&self, topic: &str, position: Position) {
        if position.epoch.is_empty() {
            return;
        }
        let mut positions = lock(&self.0);
        match positions.get_mut(topic) {
            Some(known) => *known = position,
            None => {
                positions.insert(topic.to_owned(), position);
            }
        }
    }

    pub(crate) fn get(&self, topic: &str) -> Option<Position> {
        lock(&self.0).get(topic).cloned()
    }

    pub(crate) fn forget(&self, topic: &str) {
        lock(&self.0).remove(topic);
    }
}
