//! Broadcast and topic pub/sub beyond the `Server`/`Client` methods:
//! subscriptions, topic limits, the slow-consumer close code, presence, and
//! the [`Backplane`] that carries fan-out between replicas (with [`Peers`],
//! what replicas say to each other, for engines to carry).

pub(crate) mod access;
pub(crate) mod backplane;
pub(crate) mod cluster;
pub(crate) mod control;
pub(crate) mod history;
pub(crate) mod hub;
pub(crate) mod presence;
pub(crate) mod topics;
pub use crate::observe::backplane::BackplaneStats;
/// For backplane engines: their counts as `goomerang_backplane_*` metrics.
#[cfg(feature = "metrics")]
pub use crate::observe::export::backplane_collector;
pub use crate::wire::control::{Control, ControlKind};
pub use crate::wire::topic::{
    MAX_TOPIC_LEN, Position, Recovery, Subscription, TopicError, matches,
};
pub use backplane::{
    Backplane, BackplaneError, Event, HistoryFuture, Inbound, LocalOnly, PresenceFuture, Stored,
    StoredMessage,
};
pub use cluster::{HELLO_EVERY, Peers};
pub use history::History;
pub use hub::CLOSE_SLOW_CONSUMER;
pub use presence::{Presence, Present, RemotePresence, ReplicaPresence};

/// Checks the subscription table against a plain reading of the pattern
/// rules, for the topic fuzz target: `pattern` must route `topic` to its
/// subscriber exactly when the rules say it matches.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_match(pattern: &str, topic: &str) {
    let mut table = topics::Table::default();
    let sub = Subscription {
        pattern: pattern.to_owned(),
        group: None,
    };
    table.subscribe(1, &sub);
    let routed = table.route(topic, true) == [1];
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic_tokens: Vec<&str> = topic.split('.').collect();
    let expected = match pattern.last() {
        Some(&">") => {
            let prefix = &pattern[..pattern.len() - 1];
            topic_tokens.len() > prefix.len()
                && prefix
                    .iter()
                    .zip(&topic_tokens)
                    .all(|(p, t)| *p == "*" || p == t)
        }
        _ => {
            pattern.len() == topic_tokens.len()
                && pattern
                    .iter()
                    .zip(&topic_tokens)
                    .all(|(p, t)| *p == "*" || p == t)
        }
    };
    assert_eq!(routed, expected, "{pattern:?} against {topic:?}");
    assert_eq!(
        crate::wire::topic::matches(&pattern.join("."), topic),
        expected,
        "matches({pattern:?}, {topic:?})"
    );
    table.unsubscribe(1, &sub);
    assert!(table.is_empty(), "unsubscribing leaves nothing behind");
}
