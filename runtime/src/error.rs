//! `Error`: everything that can go wrong in the runtime, each variant saying what it means for the connection.

use crate::wire::status::{Code, Status};

/// The runtime's error type.
///
/// Request/reply calls return [`Status`] instead (like tonic); every `Error`
/// converts into a `Status` with the matching [`Code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server or client is not running (never started, or already closed);
    /// nothing was sent. Start it with `serve`/`connect` first.
    #[error("not running")]
    NotRunning,
    /// `serve`/`run`/`connect` was called while already running; the running
    /// instance is unaffected.
    #[error("already running")]
    AlreadyRunning,
    /// The server or client is shutting down; no new work is accepted, work
    /// already accepted is finishing.
    #[error("shutting down")]
    ShuttingDown,
    /// A server that has shut down cannot be started again; build a new one.
    #[error("server is closed and cannot be restarted")]
    Closed,
    /// Binding or accepting on the listener failed; the server is not running.
    #[error("listener error: {0}")]
    Listen(#[source] std::io::Error),
    /// The WebSocket handshake with the server failed; no connection exists.
    #[error("could not connect: {0}")]
    Connect(#[source] tokio_tungstenite::tungstenite::Error),
    /// The server answered the handshake but refused it (e.g. HTTP 401/503); no connection exists.
    #[error("server refused the connection with HTTP {status}: {reason}")]
    Refused {
        /// The HTTP status the server answered with.
        status: u16,
        /// The response body, or the reason phrase when the body is empty.
        reason: String,
    },
    /// The connection has ended (closed by either side or lost); nothing more
    /// can be sent on it. Carries the close code and reason when there was a close frame.
    #[error("connection closed ({code}: {reason})")]
    ConnectionClosed {
        /// The RFC 6455 close code, 1006 when the connection was lost without one.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The outbound message is larger than the configured maximum message size;
    /// it was not sent and the connection is unaffected.
    #[error("message of {size} bytes exceeds the {max} byte limit")]
    MessageTooLarge {
        /// Encoded frame size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The connection's outbound queue is full (`try_send` only); the message
    /// was not queued and the connection is unaffected.
    #[error("outbound queue is full")]
    QueueFull,
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
    #[error("handler for {type_name} failed: {status}")]
    Handler {
        /// The message type being handled.
        type_name: String,
        /// What the handler returned.
        status: Status,
    },
    /// A handler panicked. The panic was caught: a request got an INTERNAL reply,
    /// and the connection and process carry on.
    #[error("handler for {type_name} panicked: {message}")]
    HandlerPanicked {
        /// The message type being handled.
        type_name: String,
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
    /// Shutdown reached its deadline with tasks still running; they were aborted.
    #[error("shutdown deadline passed with {remaining} task(s) still running; they were aborted")]
    ShutdownTimedOut {
        /// How many tasks were still running.
        remaining: usize,
    },
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
    /// A topic or pattern is malformed; nothing was subscribed or published.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] crate::wire::topic::TopicError),
    /// The connection holds the maximum number of subscriptions; this one was refused.
    #[error("subscription limit of {limit} reached")]
    SubscriptionLimit {
        /// The configured limit.
        limit: usize,
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
    /// TLS could not be set up (bad certificate or key) or its handshake
    /// failed; no connection exists.
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A close code that an endpoint may not send (RFC 6455 §7.4); nothing was sent.
    #[error("close code {0} may not be sent (use 1000, or 3000-4999 for applications)")]
    InvalidCloseCode(u16),
    /// The builder was given something it cannot build; nothing was started.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The URL given to `connect` is not a usable `ws://` URL; nothing was attempted.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// A short, stable name for the kind of error (the `kind` label of
    /// `goomerang_errors_total`), e.g. `protocol` or `slow_consumer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotRunning => "not_running",
            Error::AlreadyRunning => "already_running",
            Error::ShuttingDown => "shutting_down",
            Error::Closed => "closed",
            Error::Listen(_) => "listen",
            Error::Connect(_) => "connect",
            Error::Refused { .. } => "refused",
            Error::ConnectionClosed { .. } => "connection_closed",
            Error::MessageTooLarge { .. } => "message_too_large",
            Error::QueueFull => "queue_full",
            Error::Protocol { .. } => "protocol",
            Error::Decode { .. } => "decode",
            Error::UnknownRoute { .. } => "unknown_route",
            Error::UnknownReply(_) => "unknown_reply",
            Error::Handler { .. } => "handler",
            Error::HandlerPanicked { .. } => "handler_panicked",
            Error::Remote { .. } => "remote",
            Error::Transport(_) => "transport",
            Error::ShutdownTimedOut { .. } => "shutdown_timed_out",
            Error::SlowConsumer { .. } => "slow_consumer",
            Error::InvalidTopic(_) => "invalid_topic",
            Error::SubscriptionLimit { .. } => "subscription_limit",
            Error::KeepaliveTimeout { .. } => "keepalive_timeout",
            Error::Resubscribe { .. } => "resubscribe",
            Error::InvalidUrl { .. } => "invalid_url",
            #[cfg(feature = "tls")]
            Error::Tls(_) => "tls",
            Error::InvalidCloseCode(_) => "invalid_close_code",
            Error::Build(_) => "build",
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let code = match &err {
            Error::NotRunning
            | Error::ShuttingDown
            | Error::Closed
            | Error::Listen(_)
            | Error::Connect(_)
            | Error::Refused { .. }
            | Error::ConnectionClosed { .. }
            | Error::Protocol { .. }
            | Error::Transport(_)
            | Error::SlowConsumer { .. }
            | Error::KeepaliveTimeout { .. } => Code::Unavailable,
            #[cfg(feature = "tls")]
            Error::Tls(_) => Code::Unavailable,
            Error::AlreadyRunning => Code::FailedPrecondition,
            Error::MessageTooLarge { .. } | Error::QueueFull => Code::ResourceExhausted,
            Error::Decode { .. } => Code::InvalidArgument,
            Error::UnknownRoute { .. } => Code::Unimplemented,
            Error::Handler { status, .. }
            | Error::Remote { status, .. }
            | Error::Resubscribe { status, .. } => status.code(),
            Error::HandlerPanicked { .. } | Error::UnknownReply(_) => Code::Internal,
            Error::ShutdownTimedOut { .. } => Code::DeadlineExceeded,
            Error::InvalidUrl { .. }
            | Error::InvalidTopic(_)
            | Error::InvalidCloseCode(_)
            | Error::Build(_) => Code::InvalidArgument,
            Error::SubscriptionLimit { .. } => Code::ResourceExhausted,
        };
        Status::new(code, err.to_string())
    }
}

/// What a builder's `build` (or `ClientBuilder::connect`) reports about the
/// routes, middleware and settings it was given; nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two handlers were registered for one method, or for one message type
    /// routed by type.
    #[error("a handler for {route} is already registered")]
    DuplicateRoute {
        /// What the handlers are found by, e.g. `method "acme.Stock/Adjust"`.
        route: String,
    },
    /// A method name is not `package.Service/Method`.
    #[error("{method:?} is not a method name: {reason}")]
    InvalidMethod {
        /// The name as given.
        method: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Middleware was scoped to a method, service or type with no handler.
    #[error(
        "middleware is scoped to {scope:?}, which names no registered method, service or message type"
    )]
    UnknownScope {
        /// The scope as given.
        scope: String,
    },
    /// A handshake header name or value is not valid HTTP.
    #[error("invalid handshake header {name:?}: {source}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What HTTP says is wrong.
        #[source]
        source: http::Error,
    },
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

/// What went wrong setting up TLS or during its handshake.
#[cfg(feature = "tls")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input (`what`: certificate chain, private key, root certificate) does not parse.
    #[error("{what}: {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The PEM parser's complaint.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM input holds no certificate.
    #[error("no {0} in the PEM")]
    Empty(&'static str),
    /// rustls refused the configuration (a key that does not fit the
    /// certificate, an unusable root certificate).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// A `wss://` URL without [`ClientBuilder::tls`](crate::ClientBuilder::tls).
    #[error("wss:// needs ClientBuilder::tls(..)")]
    NotConfigured,
    /// The URL's host is not a valid TLS server name.
    #[error("server name {name:?}: {source}")]
    ServerName {
        /// The host as given.
        name: String,
        /// Why it is not a server name.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed (the server's certificate is not trusted, the
    /// connection broke); the I/O error wraps rustls' reason.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}
