//! `Control`: what a client asks of the server's pub/sub (SUBSCRIBE, UNSUBSCRIBE, PUBLISH, BROADCAST), as interceptors and policies see it.

/// Which pub/sub frame a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlKind {
    /// `SUBSCRIBE`: start receiving a pattern's messages.
    Subscribe,
    /// `UNSUBSCRIBE`: stop.
    Unsubscribe,
    /// `PUBLISH`: deliver a message to a topic's subscribers.
    Publish,
    /// `BROADCAST`: deliver a message to every connection.
    Broadcast,
}

impl ControlKind {
    /// `subscribe`, `unsubscribe`, `publish` or `broadcast` (the `action` label of the metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Subscribe => "subscribe",
            ControlKind::Unsubscribe => "unsubscribe",
            ControlKind::Publish => "publish",
            ControlKind::Broadcast => "broadcast",
        }
    }
}

/// A client's pub/sub request, before the server acts on it: what
/// [`Middleware::control`](crate::Middleware::control) and the server's
/// authorization policies see.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Control<'a> {
    /// Which frame it is.
    pub kind: ControlKind,
    /// The pattern (subscribe, unsubscribe) or topic (publish); empty for a broadcast.
    pub topic: &'a str,
    /// The queue group of a subscription, if any.
    pub group: Option<&'a str>,
    /// The payload's type (publish, broadcast); empty otherwise.
    pub type_name: &'a str,
}
