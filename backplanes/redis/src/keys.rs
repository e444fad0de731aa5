//! The Redis channels and keys a namespace's replicas share, and the envelope an event travels in.
//!
//! | what | where |
//! |---|---|
//! | broadcasts | channel `<ns>:b` |
//! | publishes (plain subscribers) | channel `<ns>:p` |
//! | "the group registry changed" | channel `<ns>:ctl` |
//! | replicas' hellos, presence questions and answers | channel `<ns>:c` |
//! | queue groups with members | hash `<ns>:groups`: field `<replica id>:<hex(pattern)>.<hex(group)>`, value the Unix time (ms) the replica last renewed it |
//! | a queue group's waiting messages | list `<ns>:q:<field>`, popped by one replica each |
//!
//! Redis delivers a replica's own pub/sub messages back to it, so each
//! envelope names its origin and a replica skips its own. Each replica
//! renews its registry entries every second; an entry ten seconds old is a
//! dead replica's and is ignored (so replicas' clocks must agree to within
//! a few seconds).

use bytes::Bytes;

/// An event between replicas. The frame is the goomerang frame exactly as
/// the originating replica encoded it, relayed without re-encoding.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Envelope {
    /// The replica it started on.
    #[prost(fixed64, tag = "1")]
    pub(crate) origin: u64,
    /// The topic published to; empty for a broadcast.
    #[prost(string, tag = "2")]
    pub(crate) topic: String,
    /// The encoded frame.
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) frame: Bytes,
    /// For a queue-group message: how many replicas popped it and found no
    /// member to take it (the group's members there had just left).
    #[prost(uint32, tag = "4")]
    pub(crate) bounces: u32,
}

/// Names under one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    namespace: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Keys {
        Keys {
            namespace: namespace.to_owned(),
        }
    }

    pub(crate) fn broadcast(&self) -> String {
        format!("{}:b", self.namespace)
    }

    pub(crate) fn publish(&self) -> String {
        format!("{}:p", self.namespace)
    }

    pub(crate) fn control(&self) -> String {
        format!("{}:ctl", self.namespace)
    }

    pub(crate) fn peers(&self) -> String {
        format!("{}:c", self.namespace)
    }

    pub(crate) fn registry(&self) -> String {
        format!("{}:groups", self.namespace)
    }

    /// A group's list.
    pub(crate) fn queue(&self, field: &str) -> String {
        format!("{}:q:{field}", self.namespace)
    }
}

/// The registry field of the group `group` at `pattern`.
pub(crate) fn field(pattern: &str, group: &str) -> String {
    format!("{}.{}", hex(pattern), hex(group))
}

/// The pattern and group a registry field names; `None` for a foreign field.
pub(crate) fn parse_field(field: &str) -> Option<(String, String)> {
    let (pattern, group) = field.split_once('.')?;
    Some((unhex(pattern)?, unhex(group)?))
}

fn hex(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("app");
        assert_eq!(k.broadcast(), "app:b");
        assert_eq!(k.publish(), "app:p");
        assert_eq!(k.control(), "app:ctl");
        assert_eq!(k.peers(), "app:c");
        assert_eq!(k.registry(), "app:groups");
        assert_eq!(field("jobs.*", "w"), "6a6f62732e2a.77");
        assert_eq!(k.queue(&field("jobs.*", "w")), "app:q:6a6f62732e2a.77");
    }

    #[test]
    fn fields_round_trip_and_foreign_ones_are_ignored() {
        let f = field("a.>", "group with spaces");
        assert_eq!(
            parse_field(&f),
            Some(("a.>".into(), "group with spaces".into()))
        );
        assert_eq!(parse_field("nodot"), None);
        assert_eq!(parse_field("zz.77"), None);
        assert_eq!(parse_field("6.77"), None);
    }
}
