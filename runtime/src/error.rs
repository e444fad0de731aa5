//! `Error`: what a call (start, connect, send, shut down, build) returns when it fails, each variant saying what it means for the connection.

use crate::wire::status::{Code, Status};

/// What a call returns when it fails on this side: it could not be started,
/// queued or sent. Every variant can come back from some call; what goes wrong
/// away from any call is an [`Incident`](crate::Incident), reported to the
/// `on_error` hooks instead.
///
/// Calls answered by the peer (requests, subscriptions) return [`Status`]
/// instead, as the answer may be the peer's own; every `Error` converts into a
/// `Status` with the matching [`Code`]. The rule is spelled out in
/// [`guide::errors`](crate::guide::errors).
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
    /// Binding the listener or reading its address failed; the server is not running.
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
    /// Shutdown reached its deadline with tasks still running; they were aborted.
    #[error("shutdown deadline passed with {remaining} task(s) still running; they were aborted")]
    ShutdownTimedOut {
        /// How many tasks were still running.
        remaining: usize,
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
    /// The session store failed, or a client tried to create a session
    /// (sessions are the server's).
    #[error(transparent)]
    Session(#[from] crate::conn::session::SessionStoreError),
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
            Error::ShutdownTimedOut { .. } => "shutdown_timed_out",
            Error::InvalidTopic(_) => "invalid_topic",
            Error::SubscriptionLimit { .. } => "subscription_limit",
            Error::InvalidUrl { .. } => "invalid_url",
            #[cfg(feature = "tls")]
            Error::Tls(_) => "tls",
            Error::InvalidCloseCode(_) => "invalid_close_code",
            Error::Build(_) => "build",
            Error::Session(_) => "session",
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
            | Error::ConnectionClosed { .. } => Code::Unavailable,
            #[cfg(feature = "tls")]
            Error::Tls(_) => Code::Unavailable,
            Error::AlreadyRunning => Code::FailedPrecondition,
            Error::MessageTooLarge { .. } | Error::QueueFull => Code::ResourceExhausted,
            Error::ShutdownTimedOut { .. } => Code::DeadlineExceeded,
            Error::InvalidUrl { .. }
            | Error::InvalidTopic(_)
            | Error::InvalidCloseCode(_)
            | Error::Build(_) => Code::InvalidArgument,
            Error::SubscriptionLimit { .. } => Code::ResourceExhausted,
            Error::Session(_) => Code::Unavailable,
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
    /// The latency histogram bounds given to `metrics_buckets` are unusable.
    #[error("metrics buckets {bounds:?}: {reason}")]
    InvalidBuckets {
        /// The bounds as given.
        bounds: Vec<f64>,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A `history` rule cannot be kept: its pattern is malformed, or the
    /// server has a backplane.
    #[error("history for {pattern:?}: {reason}")]
    InvalidHistory {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        reason: String,
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
