//! The Redis channels and keys a namespace's replicas share, and the envelope an event travels in.
//!
//! | what | where |
//! |---|---|
//! | broadcasts | channel `<ns>:b` |
//! | publishes (plain subscribers) | channel `<ns>:p` |
//! | "the group registry changed" | channel `<ns>:ctl` |
//! | replicas' hellos, presence questions and answers | channel `<ns>:c` |
//! | publishes on topics with history, numbered | channel `<ns>:h`; per topic, counter `<ns>:hn:<topic>`, epoch `<ns>:he:<topic>` and the kept messages, stream `<ns>:hs:<topic>` (entry fields `o` offset, `f` frame; trimmed to the topic's history rule; all three kept 7 days after the last publish) |
//! | queue groups with members | hash `<ns>:groups`: field `<replica id>:<hex(pattern)>.<hex(group)>`, value the Unix time (ms) the replica last renewed it |
//! | a queue group's waiting messages | list `<ns>:q:<field>`, popped by one replica each |
//!
//! Redis delivers a replica's own pub/sub messages back to it, so each
//! envelope names its origin and a replica skips its own. Each replica
//! renews its registry entries every second; an entry ten seconds old is a
//! dead replica's and is ignored (so replicas' clocks must agree to within
//! a few seconds).

use std::time::Duration;

use bytes::Bytes;
use goomerang::pubsub::{Stored, StoredMessage};

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

    /// Where numbered history publishes go.
    pub(crate) fn history(&self) -> String {
        format!("{}:h", self.namespace)
    }

    /// A history topic's counter, epoch and stream of kept messages.
    pub(crate) fn numbering(&self, topic: &str) -> [String; 3] {
        [
            format!("{}:hn:{topic}", self.namespace),
            format!("{}:he:{topic}", self.namespace),
            format!("{}:hs:{topic}", self.namespace),
        ]
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

/// Numbers a publish on a topic with history, keeps it and publishes it,
/// atomically: KEYS counter, epoch, channel, stream; ARGV a fresh epoch
/// (used if the topic has none), the topic, the frame, the keys' lifetime
/// in ms, the most messages kept, the longest a message is kept in ms. What
/// goes out is `<epoch>\n<offset>\n<topic>\n<frame>` (epochs and topics
/// hold no newline); the offset is returned. A topic without an epoch (its
/// keys expired, or Redis lost them) starts a new history, stream and all.
pub(crate) const NUMBER_AND_PUBLISH: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[4])
end
local offset = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[5], '*', 'o', offset, 'f', ARGV[3])
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[6])
if cutoff > 0 then
  redis.call('XTRIM', KEYS[4], 'MINID', cutoff)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
redis.call('PUBLISH', KEYS[3], epoch .. '\n' .. offset .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return offset
";

/// Reads a topic's history: KEYS counter, epoch, stream. Returns nothing
/// for a topic without an epoch, else `{epoch, last offset, now (s), now
/// (us), entries}` where entries are the stream's, oldest first.
pub(crate) const READ_HISTORY: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  return false
end
local last = redis.call('GET', KEYS[1]) or '0'
local now = redis.call('TIME')
return {epoch, last, now[1], now[2], redis.call('XRANGE', KEYS[3], '-', '+')}
";

/// What [`READ_HISTORY`] returned, as the server takes it; `None` for a
/// topic Redis keeps no history of, or an answer of another shape.
pub(crate) fn parse_history(value: redis::Value) -> Option<Stored> {
    use redis::Value;
    fn text(value: &Value) -> Option<&str> {
        match value {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        }
    }
    fn number(value: &Value) -> Option<u64> {
        match value {
            Value::Int(n) => u64::try_from(*n).ok(),
            other => text(other)?.parse().ok(),
        }
    }
    let Value::Array(parts) = value else {
        return None;
    };
    let [epoch, last, secs, micros, Value::Array(entries)] = parts.as_slice() else {
        return None;
    };
    let now_ms = number(secs)? * 1000 + number(micros)? / 1000;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let [id, Value::Array(fields)] = entry.as_slice() else {
            return None;
        };
        let at_ms: u64 = text(id)?.split_once('-')?.0.parse().ok()?;
        let (mut offset, mut frame) = (None, None);
        for pair in fields.chunks(2) {
            match (pair.first().and_then(text), pair.get(1)) {
                (Some("o"), Some(value)) => offset = number(value),
                (Some("f"), Some(Value::BulkString(bytes))) => {
                    frame = Some(Bytes::copy_from_slice(bytes));
                }
                _ => {}
            }
        }
        messages.push(StoredMessage::new(
            offset?,
            Duration::from_millis(now_ms.saturating_sub(at_ms)),
            frame?,
        ));
    }
    Some(Stored::new(text(epoch)?, number(last)?, messages))
}

/// A numbered publish as [`NUMBER_AND_PUBLISH`] sent it: (epoch, offset, topic, frame).
pub(crate) fn parse_numbered(payload: &[u8]) -> Option<(String, u64, String, Bytes)> {
    let mut parts = payload.splitn(4, |b| *b == b'\n');
    let epoch = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let topic = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let frame = Bytes::copy_from_slice(parts.next()?);
    Some((epoch, offset, topic, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_read_becomes_the_stored_history() {
        use redis::Value;
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, offset: &str, frame: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("o"), bulk(offset), bulk("f"), bulk(frame)]),
            ])
        };
        let read = Value::Array(vec![
            bulk("e1"),
            bulk("5"),
            bulk("1000"),
            bulk("500000"),
            Value::Array(vec![
                entry("1000000-0", "4", "x"),
                entry("1000400-0", "5", "y"),
            ]),
        ]);
        assert_eq!(
            parse_history(read),
            Some(Stored::new(
                "e1",
                5,
                vec![
                    StoredMessage::new(4, Duration::from_millis(500), Bytes::from_static(b"x")),
                    StoredMessage::new(5, Duration::from_millis(100), Bytes::from_static(b"y")),
                ]
            ))
        );
        assert_eq!(parse_history(Value::Nil), None, "no history");
        assert_eq!(
            parse_history(Value::Array(vec![bulk("e1")])),
            None,
            "another shape"
        );
    }

    #[test]
    fn names() {
        let k = Keys::new("app");
        assert_eq!(k.broadcast(), "app:b");
        assert_eq!(k.publish(), "app:p");
        assert_eq!(k.control(), "app:ctl");
        assert_eq!(k.peers(), "app:c");
        assert_eq!(k.history(), "app:h");
        assert_eq!(
            k.numbering("chat.a"),
            [
                "app:hn:chat.a".to_owned(),
                "app:he:chat.a".to_owned(),
                "app:hs:chat.a".to_owned()
            ]
        );
        assert_eq!(k.registry(), "app:groups");
        assert_eq!(field("jobs.*", "w"), "6a6f62732e2a.77");
        assert_eq!(k.queue(&field("jobs.*", "w")), "app:q:6a6f62732e2a.77");
    }

    #[test]
    fn numbered_publishes_parse_and_frames_keep_their_newlines() {
        let frame = b"\x0a\x01\n\x12";
        let mut payload = b"ep1\n42\nchat.a\n".to_vec();
        payload.extend_from_slice(frame);
        let (epoch, offset, topic, parsed) = parse_numbered(&payload).expect("parses");
        assert_eq!(
            (epoch.as_str(), offset, topic.as_str()),
            ("ep1", 42, "chat.a")
        );
        assert_eq!(&parsed[..], frame);
        assert_eq!(parse_numbered(b"ep1\nx\nchat.a\n"), None);
        assert_eq!(parse_numbered(b"ep1\n1"), None);
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
