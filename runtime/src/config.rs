//! `Config`: limits and timeouts shared by servers and clients, with safe defaults.

use std::time::Duration;

/// Limits and timeouts for a server or client; every connection it owns uses them.
///
/// Build it from [`Config::default()`] and the builder-style setters:
///
/// ```
/// let config = goomerang::Config::default()
///     .ordered(true)
///     .max_message_size(1 << 20);
/// assert!(config.is_ordered());
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Config {
    pub(crate) max_message_size: usize,
    pub(crate) outbound_queue_bytes: usize,
    pub(crate) max_concurrent_per_connection: usize,
    pub(crate) max_concurrent_handlers: usize,
    pub(crate) ordered: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) read_buffer_size: usize,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) max_subscriptions_per_connection: usize,
    pub(crate) slow_consumer: SlowConsumer,
    pub(crate) max_connections: usize,
    pub(crate) handshake_timeout: Duration,
}

/// Keepalive timing: a ping after `interval` of silence from the peer; no
/// frame at all (pong or other) within `timeout` after that drops the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Silence after which a ping is sent (and sent again while silence lasts).
    pub interval: Duration,
    /// How long after the first unanswered ping the peer counts as gone.
    pub timeout: Duration,
}

impl Keepalive {
    /// A ping after `interval` of silence; the peer is gone if nothing
    /// arrives within `timeout` after that.
    pub fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive { interval, timeout }
    }
}

/// What a broadcast or publish does for a recipient whose outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Drop the connection at once, close code 4002, reported through `on_error`
    /// and `on_disconnect`. The default: a client that cannot keep up
    /// resynchronises by reconnecting, and never delays anyone else.
    Disconnect,
    /// Skip this message for that recipient (reported through `on_error`); the
    /// connection stays.
    Drop,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 4 << 20,
            shutdown_timeout: Duration::from_secs(30),
            outbound_queue_bytes: 4 << 20,
            max_concurrent_per_connection: 128,
            max_concurrent_handlers: 8192,
            ordered: false,
            request_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 512,
            keepalive: Some(Keepalive {
                interval: Duration::from_secs(20),
                timeout: Duration::from_secs(20),
            }),
            max_subscriptions_per_connection: 1024,
            slow_consumer: SlowConsumer::Disconnect,
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Largest WebSocket message (one encoded frame) accepted or sent, in bytes.
    /// A peer sending more is closed with 1009 (message too big); sending more
    /// yourself fails with [`Error::MessageTooLarge`](crate::Error::MessageTooLarge).
    /// Default 4 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(64);
        self
    }

    /// Bytes of encoded frames that may wait in one connection's outbound
    /// queue. When it is full, `send`/`request` wait for room (bounded by the
    /// request deadline for requests), `try_send` fails with
    /// [`Error::QueueFull`](crate::Error::QueueFull), and handler replies wait,
    /// which pauses reading from that connection only. Default 4 MiB.
    pub fn outbound_queue_bytes(mut self, bytes: usize) -> Self {
        self.outbound_queue_bytes = bytes.clamp(1, u32::MAX as usize);
        self
    }

    /// Handlers running at once for one connection; when reached, reading from
    /// that connection pauses. Default 128.
    pub fn max_concurrent_per_connection(mut self, n: usize) -> Self {
        self.max_concurrent_per_connection = n.max(1);
        self
    }

    /// Handlers running at once across all connections of this server or
    /// client; when reached, connections with work pause reading. Default 8192.
    pub fn max_concurrent_handlers(mut self, n: usize) -> Self {
        self.max_concurrent_handlers = n.max(1);
        self
    }

    /// Handle each connection's messages one at a time in arrival order.
    /// Replies to this side's own requests are still processed while a handler
    /// runs, so a handler may call back into the peer. Default off (concurrent).
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Deadline for requests that do not set their own. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a close handshake may take before the connection is dropped. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The drain deadline of a shutdown started by the signal given to
    /// `Server::serve_with_shutdown`. Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Size of a connection's read buffer while little data comes in (larger
    /// messages still arrive whole; the buffer grows for them). While data
    /// streams in, reads take 16 KiB chunks; once the connection is quiet
    /// the buffer is given back. Default 512 bytes: measured with
    /// goomerang-bench, an idle connection then costs the server under 5 KiB,
    /// with request and one-way throughput unchanged against 2 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.max(512);
        self
    }

    /// Keepalive on both ends of each connection; `None` turns it off.
    /// Default: a ping after 20 s of silence, dropped 20 s later without an answer,
    /// so half-open TCP connections are found within 40 s.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Subscriptions one connection may hold (server). Default 1024.
    pub fn max_subscriptions_per_connection(mut self, n: usize) -> Self {
        self.max_subscriptions_per_connection = n;
        self
    }

    /// What broadcast and publish do for a recipient whose queue is full
    /// (server). Default [`SlowConsumer::Disconnect`].
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// Connections a server holds at once; upgrades beyond it get HTTP 503.
    /// Default 100,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How long a connection may take to complete its TLS handshake and send
    /// its HTTP upgrade request headers (server), or to connect and upgrade
    /// (client). Slower peers (slowloris) are dropped. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether [`ordered`](Self::ordered) processing is on.
    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// What the WebSocket reader accepts, and its resting buffer.
    pub(crate) fn ws_limits(&self) -> crate::ws::Limits {
        crate::ws::Limits {
            max_message: self.max_message_size,
            read_buffer: self.read_buffer_size,
        }
    }

    /// The handshake's settings (the client's; frames are goomerang's own, see `ws`).
    pub(crate) fn websocket(&self) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
