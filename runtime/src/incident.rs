//! `Incident`: what goes wrong away from any call, reported to the `on_error` hooks and counted, never returned.

use crate::error::Error;
use crate::wire::status::Status;

/// Something that went wrong while the server or client ran, not in answer to
/// any call of yours: a peer broke the protocol, a one-way handler failed, a
/// reply came for nobody. Each is reported to the `on_error` hooks (with the
/// connection, when there is one), logged at debug level and counted in
/// `goomerang_errors_total{kind}`; none is ever returned from a call, which
/// returns [`Error`] or [`Status`]. Each variant says what became of the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Incident {
    /// The peer broke the protocol (text frame, undecodable or unknown frame);
    /// the connection was closed with the given RFC 6455 close code.
    #[error("protocol violation (closing with {close_code}): {detail}")]
    Protocol {
        /// The close code sent to the peer.
        close_code: u16,
        /// What the peer did.
        detail: String,
    },
    /// An incoming payload did not decode as its declared type. A request gets
    /// an INVALID_ARGUMENT reply; the connection stays open.
    #[error("payload of type {type_name} does not decode: {source}")]
    Decode {
        /// The declared payload type.
        type_name: String,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// A message arrived for a method (or, sent without one, a type) with no
    /// handler. A request gets an UNIMPLEMENTED reply, a one-way message an
    /// ERROR frame; the connection stays open.
    #[error("{}", unknown_route(type_name, method))]
    UnknownRoute {
        /// The payload's type.
        type_name: String,
        /// The method called; empty when the message was routed by type.
        method: String,
    },
    /// A REPLY or ERROR arrived for a request id that is not waiting (it timed
    /// out, was cancelled, or was answered already). It was dropped; the connection stays open.
    #[error("reply to unknown request id {0} dropped (late or duplicate)")]
    UnknownReply(u64),
    /// A one-way handler returned an error; the connection stays open.
    #[error("handler for {} failed: {status}", describe(type_name, method))]
    Handler {
        /// The message type being handled.
        type_name: String,
        /// The method it was sent to; empty when it was routed by type.
        method: String,
        /// What the handler returned.
        status: Status,
    },
    /// A handler panicked. The panic was caught: a request got an INTERNAL reply,
    /// and the connection and process carry on.
    #[error("handler for {} panicked: {message}", describe(type_name, method))]
    HandlerPanicked {
        /// The message type being handled.
        type_name: String,
        /// The method it was sent to; empty when it was routed by type.
        method: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The peer reported (with an ERROR frame of id 0) that a one-way message
    /// we sent could not be handled; the connection stays open.
    #[error(
        "peer could not handle a one-way message ({}): {status}",
        describe(type_name, method)
    )]
    Remote {
        /// The type of the message it could not handle (may be empty).
        type_name: String,
        /// The method it was sent to; empty when it was sent by type.
        method: String,
        /// What the peer said.
        status: Status,
    },
    /// Reading from or writing to the socket failed; the connection is gone.
    #[error("transport error: {0}")]
    Transport(#[source] tokio_tungstenite::tungstenite::Error),
    /// A peer subscribed, unsubscribed or published to a malformed topic; it
    /// was answered INVALID_ARGUMENT and nothing changed.
    #[error("invalid topic from the peer: {0}")]
    InvalidTopic(#[source] crate::wire::topic::TopicError),
    /// A broadcast or publish found this recipient's outbound queue full. Under
    /// the default policy the connection was dropped (close code 4002);
    /// otherwise this message was skipped for it. Other recipients are unaffected.
    #[error("connection {conn} is a slow consumer (outbound queue full){}", if *disconnected { "; disconnected" } else { "; message dropped for it" })]
    SlowConsumer {
        /// The connection's id.
        conn: u64,
        /// Whether it was disconnected (else the message was dropped for it).
        disconnected: bool,
    },
    /// The peer answered no ping within the keepalive timeout; the connection
    /// was dropped as dead (half-open).
    #[error("peer silent for {silent:?}: keepalive timeout, connection dropped")]
    KeepaliveTimeout {
        /// How long the peer had been silent.
        silent: std::time::Duration,
    },
    /// After a reconnection the server refused to renew a subscription; the
    /// client no longer receives that topic. The connection stays open.
    #[error("could not renew the subscription to {pattern:?} after reconnecting: {status}")]
    Resubscribe {
        /// The pattern.
        pattern: String,
        /// The server's answer.
        status: Status,
    },
    /// Accepting a TCP connection failed (out of file descriptors, say); the
    /// server pauses briefly and keeps accepting.
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// A reconnection attempt failed; the client waits its back-off and tries again.
    #[error("reconnection attempt failed: {0}")]
    Reconnect(#[source] Error),
    /// After a reconnection, the server could not replay what this client
    /// missed on `topic` (its history no longer reaches back that far, or
    /// was lost): the subscription holds again, from now. Fetch the state
    /// the topic's messages describe again by other means.
    #[error("messages missed on {topic:?} while disconnected cannot be recovered")]
    Unrecoverable {
        /// The topic.
        topic: String,
    },
    /// The session store failed while a client resumed its session; the
    /// connection went on without it.
    #[error(transparent)]
    Session(crate::conn::session::SessionStoreError),
    /// The backplane that links replicas failed to reach its broker, or to
    /// ship or read an event; local delivery carries on. See
    /// [`Backplane`](crate::pubsub::Backplane).
    #[error(transparent)]
    Backplane(#[from] crate::pubsub::BackplaneError),
}

impl Incident {
    /// A short, stable name for the kind of incident (the `kind` label of
    /// `goomerang_errors_total`), e.g. `protocol` or `slow_consumer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Incident::Protocol { .. } => "protocol",
            Incident::Decode { .. } => "decode",
            Incident::UnknownRoute { .. } => "unknown_route",
            Incident::UnknownReply(_) => "unknown_reply",
            Incident::Handler { .. } => "handler",
            Incident::HandlerPanicked { .. } => "handler_panicked",
            Incident::Remote { .. } => "remote",
            Incident::Transport(_) => "transport",
            Incident::SlowConsumer { .. } => "slow_consumer",
            Incident::KeepaliveTimeout { .. } => "keepalive_timeout",
            Incident::Resubscribe { .. } => "resubscribe",
            Incident::InvalidTopic(_) => "invalid_topic",
            Incident::Accept(_) => "accept",
            Incident::Reconnect(_) => "reconnect",
            Incident::Unrecoverable { .. } => "unrecoverable",
            Incident::Session(_) => "session",
            Incident::Backplane(_) => "backplane",
        }
    }
}

fn describe(type_name: &str, method: &str) -> String {
    match (type_name, method) {
        ("", "") => "unnamed".to_owned(),
        (type_name, "") => format!("type {type_name:?}"),
        (type_name, method) => format!("method {method:?}, type {type_name:?}"),
    }
}

fn unknown_route(type_name: &str, method: &str) -> String {
    if method.is_empty() {
        format!("no handler for message type {type_name:?}")
    } else {
        format!("no handler for method {method:?}")
    }
}
