//! The NATS subjects and queue names a namespace's replicas share.
//!
//! goomerang topics follow NATS's own token rules (`.`-separated, `*` one
//! token, `>` the rest, no whitespace), so a topic or pattern goes into a
//! subject as it is:
//!
//! | what | subject | subscribed by |
//! |---|---|---|
//! | broadcast | `<ns>.b` | every replica |
//! | publish, plain subscribers | `<ns>.p.<topic>` | every replica, on `<ns>.p.>` |
//! | publish, queue groups | `<ns>.q.<topic>` | replicas with a member, on `<ns>.q.<pattern>` in queue `<hex(pattern)>_<hex(group)>` |
//! | replicas' hellos, presence questions and answers | `<ns>.c` | every replica |
//! | publishes on topics with history, numbered (headers `Goomerang-Epoch`, `Goomerang-Offset`) | `<ns>.n.<topic>` | every replica, on `<ns>.n.>` |
//! | the kept history of a topic | `<ns>.h.<len>_<age>.<topic>` in JetStream stream `GOOMERANG_<hex(ns)>_<len>_<age>` | read by a replica that lacks it |
//!
//! A history rule (keep `len` messages per topic for `age` milliseconds)
//! has a JetStream stream of its own, since JetStream limits a stream's
//! messages per subject and age as a whole.
//!
//! The queue name carries the pattern because NATS merges queue
//! subscriptions by name across subjects, while goomerang keeps a group per
//! pattern; hex keeps any group name valid as a NATS queue name.

/// Subjects under one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    namespace: String,
}

impl Subjects {
    pub(crate) fn new(namespace: &str) -> Subjects {
        Subjects {
            namespace: namespace.to_owned(),
        }
    }

    pub(crate) fn broadcast(&self) -> String {
        format!("{}.b", self.namespace)
    }

    pub(crate) fn control(&self) -> String {
        format!("{}.c", self.namespace)
    }

    pub(crate) fn plain(&self, topic: &str) -> String {
        format!("{}.p.{topic}", self.namespace)
    }

    /// What every replica subscribes to for plain publishes.
    pub(crate) fn all_plain(&self) -> String {
        format!("{}.p.>", self.namespace)
    }

    /// The topic of a subject received on [`all_plain`](Self::all_plain).
    pub(crate) fn topic_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".p.")
    }

    /// Where a publish goes for the queue groups (and where a group
    /// subscribes, with its pattern as the topic).
    pub(crate) fn group(&self, topic: &str) -> String {
        format!("{}.q.{topic}", self.namespace)
    }

    /// Where a numbered history publish goes to every replica.
    pub(crate) fn numbered(&self, topic: &str) -> String {
        format!("{}.n.{topic}", self.namespace)
    }

    /// What every replica subscribes to for numbered history publishes.
    pub(crate) fn all_numbered(&self) -> String {
        format!("{}.n.>", self.namespace)
    }

    /// The topic of a subject received on [`all_numbered`](Self::all_numbered).
    pub(crate) fn numbered_topic_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".n.")
    }

    /// The JetStream stream keeping the history of topics under the rule
    /// `len` messages, `age_ms` milliseconds: its name and its subjects.
    pub(crate) fn history_stream(&self, len: usize, age_ms: u128) -> (String, String) {
        (
            format!("GOOMERANG_{}_{len}_{age_ms}", hex(&self.namespace)),
            format!("{}.h.{len}_{age_ms}.>", self.namespace),
        )
    }

    /// The subject keeping `topic`'s history under that rule.
    pub(crate) fn history(&self, len: usize, age_ms: u128, topic: &str) -> String {
        format!("{}.h.{len}_{age_ms}.{topic}", self.namespace)
    }

    /// The NATS queue name of goomerang's group `group` at `pattern`.
    pub(crate) fn queue_name(pattern: &str, group: &str) -> String {
        format!("{}_{}", hex(pattern), hex(group))
    }
}

fn hex(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_queue_names() {
        let s = Subjects::new("app");
        assert_eq!(s.broadcast(), "app.b");
        assert_eq!(s.control(), "app.c");
        assert_eq!(s.plain("room.1"), "app.p.room.1");
        assert_eq!(s.all_plain(), "app.p.>");
        assert_eq!(s.topic_of("app.p.room.1"), Some("room.1"));
        assert_eq!(s.topic_of("app.b"), None);
        assert_eq!(s.topic_of("other.p.x"), None);
        assert_eq!(s.group("jobs.*"), "app.q.jobs.*");
        assert_eq!(s.numbered("room.1"), "app.n.room.1");
        assert_eq!(s.all_numbered(), "app.n.>");
        assert_eq!(s.numbered_topic_of("app.n.room.1"), Some("room.1"));
        assert_eq!(s.numbered_topic_of("app.p.room.1"), None);
        assert_eq!(
            s.history_stream(10, 60_000),
            (
                "GOOMERANG_617070_10_60000".to_owned(),
                "app.h.10_60000.>".to_owned()
            )
        );
        assert_eq!(s.history(10, 60_000, "room.1"), "app.h.10_60000.room.1");
        // Distinct for the same name at two patterns, and never a space.
        assert_eq!(Subjects::queue_name("a.*", "w w"), "612e2a_772077");
        assert_ne!(
            Subjects::queue_name("a.*", "w"),
            Subjects::queue_name("a.>", "w")
        );
    }
}
