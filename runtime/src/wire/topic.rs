//! Topics as the protocol defines them: what a topic or pattern may look like, and a subscription's identity.

/// Longest topic or pattern accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a topic or pattern was refused; nothing was subscribed or published.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is empty.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`].
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// Two dots in a row, or a dot at either end.
    #[error("topic {0:?} has an empty token")]
    EmptyToken(String),
    /// Whitespace anywhere in the topic.
    #[error("topic {0:?} contains whitespace")]
    Whitespace(String),
    /// A wildcard in a topic being published (wildcards are for patterns).
    #[error("topic {0:?}: wildcards are for subscriptions, not publishing")]
    WildcardInTopic(String),
    /// `>` before the last token.
    #[error("pattern {0:?}: `>` must be the last token")]
    TailNotLast(String),
    /// `*` or `>` inside a token instead of standing alone.
    #[error("topic {0:?}: `*` and `>` must be whole tokens")]
    PartialWildcard(String),
}

/// Whether a message published on `topic` reaches a subscription to
/// `pattern`: tokens are compared one by one, `*` stands for any one token
/// and a final `>` for one or more. Both are assumed valid.
///
/// ```
/// use goomerang::pubsub::matches;
/// assert!(matches("chat.*", "chat.room1"));
/// assert!(matches("chat.>", "chat.room1.typing"));
/// assert!(!matches("chat.*", "chat.room1.typing"));
/// assert!(!matches("chat.>", "chat"));
/// ```
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut topic = topic.split('.');
    for token in pattern.split('.') {
        if token == ">" {
            return topic.next().is_some();
        }
        match topic.next() {
            Some(t) if token == "*" || token == t => {}
            _ => return false,
        }
    }
    topic.next().is_none()
}

/// Whether a (valid) pattern has a wildcard token (`*` or `>`).
pub(crate) fn has_wildcards(pattern: &str) -> bool {
    pattern.split('.').any(|token| token == "*" || token == ">")
}

/// Checks a topic (`pattern` false: no wildcards) or a subscription pattern.
pub(crate) fn validate(topic: &str, pattern: bool) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let tokens: Vec<&str> = topic.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(TopicError::EmptyToken(topic.to_owned()));
        }
        if token.chars().any(char::is_whitespace) {
            return Err(TopicError::Whitespace(topic.to_owned()));
        }
        let wildcard = *token == "*" || *token == ">";
        if wildcard && !pattern {
            return Err(TopicError::WildcardInTopic(topic.to_owned()));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(TopicError::TailNotLast(topic.to_owned()));
        }
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(TopicError::PartialWildcard(topic.to_owned()));
        }
    }
    Ok(())
}

/// A subscription's identity within one connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Subscription {
    /// The topic or pattern.
    pub pattern: String,
    /// The queue group, if any.
    pub group: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("chat.room1", false).is_ok());
        assert!(validate("chat.*", true).is_ok());
        assert!(validate("chat.>", true).is_ok());
        assert_eq!(
            validate("chat.*", false),
            Err(TopicError::WildcardInTopic("chat.*".into()))
        );
        assert_eq!(
            validate("chat.>.x", true),
            Err(TopicError::TailNotLast("chat.>.x".into()))
        );
        assert_eq!(
            validate("chat..x", true),
            Err(TopicError::EmptyToken("chat..x".into()))
        );
        assert_eq!(validate("", true), Err(TopicError::Empty));
        assert_eq!(
            validate("a b", true),
            Err(TopicError::Whitespace("a b".into()))
        );
        assert_eq!(
            validate("ab*", true),
            Err(TopicError::PartialWildcard("ab*".into()))
        );
        assert_eq!(validate(&"x".repeat(300), true), Err(TopicError::TooLong));
    }
}

/// A place in a topic's history: the history's `epoch` and a message's
/// `offset` in it. What a client last received on a topic, or where the
/// topic stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Position {
    /// The history's name; it changes when the history is lost.
    pub epoch: String,
    /// The message's offset (1, 2, ...); 0 before the first.
    pub offset: u64,
}

impl Position {
    /// Offset `offset` in the history named `epoch`.
    pub fn new(epoch: impl Into<String>, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }
}

/// What [`Client::subscribe_from`](crate::Client::subscribe_from) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Everything published after the position was sent, before the
    /// subscription's confirmation.
    Recovered,
    /// The server's history no longer reaches back to the position (or it
    /// is another history): nothing was replayed; the subscription holds
    /// from now. Fetch the state again by other means.
    Unrecoverable,
    /// The server keeps no history for the topic: the subscription holds from now.
    NoHistory,
}
