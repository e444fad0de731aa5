//! `Client`: connects to a server, supervises the connection (reconnect, resubscribe), and closes gracefully.

pub(crate) mod reconnect;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::conn::connection::Connection;
use crate::conn::peer::Peer;
use crate::driver;
use crate::driver::shared::Shared;
use crate::error::{BuildError, Error};
use crate::hooks::{Hooks, hook_methods};
use crate::incident::Incident;
#[cfg(feature = "metrics")]
use crate::observe::export::Metrics;
use crate::route::router::{Router, routing_methods};
use crate::state::{State, StateCell};
use crate::sync::lock;
#[cfg(feature = "tls")]
use crate::tls::TlsError;
use crate::wire::frame::{self, SUBPROTOCOL};
use crate::wire::message::{IntoMessage, Message, Payload, Response};
use crate::wire::proto::FrameKind;
use crate::wire::status::Status;
use crate::ws::handshake::HeadFirst;
use crate::ws::{Role, Upgraded};
use reconnect::{Reconnect, WhileDisconnected};

/// The client's transport: plain TCP (`ws://`), or TLS over it (`wss://`)
/// with the `tls` feature.
type ClientIo = tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>;
use crate::pubsub::history::Positions;
use crate::wire::topic::{self, Position, Recovery, Subscription};

type Ws = Upgraded;

/// Builds a [`Client`]: handlers (for server → client messages and requests),
/// middleware, hooks, limits and the reconnect policy.
#[derive(Debug)]
#[must_use = "a builder does nothing until it is used"]
pub struct ClientBuilder {
    router: Router,
    config: Config,
    hooks: Hooks,
    reconnect: Option<Reconnect>,
    handshake: Handshake,
    /// A session key to present from the start.
    session: Option<String>,
    /// The first invalid setting, reported by `build`.
    error: Option<BuildError>,
}

/// Extra headers and subprotocols the client sends with every (re)connect, and its TLS setup.
#[derive(Debug, Clone, Default)]
struct Handshake {
    headers: http::HeaderMap,
    subprotocols: Vec<String>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    local_address: Option<std::net::IpAddr>,
    /// Other replicas of the service, tried after the URL given to `connect`.
    fallbacks: Vec<String>,
}

impl ClientBuilder {
    routing_methods!();
    hook_methods!();

    /// Sends a header with the WebSocket handshake (e.g. `authorization`), on
    /// every connect and reconnect. An invalid name or value makes `build`
    /// (and `connect`) fail with [`BuildError::InvalidHeader`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(http::Error::from)
            .and_then(|n| Ok((n, HeaderValue::from_str(value)?)));
        match parsed {
            Ok((name, value)) => {
                self.handshake.headers.insert(name, value);
            }
            Err(source) => {
                self.error.get_or_insert(BuildError::InvalidHeader {
                    name: name.to_owned(),
                    source,
                });
            }
        }
        self
    }

    #[cfg(feature = "tls")]
    /// TLS for `wss://` URLs, e.g. [`tls::client_config`](crate::tls::client_config)
    /// with your CA's certificate. Required for `wss://`.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.handshake.tls = Some(config);
        self
    }

    /// Connects from this local address (any port): to pick an interface,
    /// or to open more connections to one server than one source address
    /// has ephemeral ports (about 28,000 on Linux), e.g. from `127.0.0.2`.
    /// The server's address must be of the same family.
    pub fn local_address(mut self, address: std::net::IpAddr) -> Self {
        self.handshake.local_address = Some(address);
        self
    }

    /// Offers an extra subprotocol after `goomerang.v1` — how browsers, which
    /// cannot set headers, pass a token. The server sees it in `Handshake::subprotocols`.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.handshake.subprotocols.push(protocol.into());
        self
    }

    /// A session key saved from an earlier run ([`Client::session_key`]),
    /// presented when connecting so the server resumes that session.
    pub fn session_key(mut self, key: impl Into<String>) -> Self {
        self.session = Some(key.into());
        self
    }

    /// Other URLs of the same service (its other replicas), tried in turn
    /// after the one given to [`Client::connect`]: when connecting, if that
    /// one cannot be reached, and when reconnecting, each attempt moving to
    /// the next URL. Subscriptions are renewed wherever the client lands.
    pub fn fallback_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.handshake.fallbacks = urls.into_iter().map(Into::into).collect();
        self
    }

    /// The reconnect policy; `None` turns reconnection off (a lost connection
    /// then leaves the client CLOSED). Default: [`Reconnect::default()`].
    pub fn reconnect(mut self, policy: Option<Reconnect>) -> Self {
        self.reconnect = policy;
        self
    }

    /// Finishes the client (state NEW); connect it with [`Client::connect`].
    ///
    /// # Errors
    /// A [`BuildError`] for a route registered twice, a malformed method name,
    /// middleware scoped to nothing, or an invalid handshake header.
    pub fn build(self) -> Result<Client, BuildError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let hooks = self.hooks.finish()?;
        let routes = self.router.finish(hooks.metrics())?;
        let (current, _) = watch::channel(None);
        // No supervisor yet: `connect` starts one with a fresh token.
        let stop = CancellationToken::new();
        stop.cancel();
        let shared = Shared::new(routes, self.config, hooks, None, None);
        if let Some(held) = shared.session_key() {
            held.set(self.session);
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                shared,
                state: StateCell::new(),
                current,
                connecting: tokio::sync::Mutex::new(()),
                next_conn: AtomicU64::new(1),
                reconnect: self.reconnect,
                handshake: self.handshake,
                subscriptions: Mutex::new(BTreeSet::new()),
                stop: Mutex::new(stop),
            }),
        })
    }

    /// Builds the client and connects it to `url` (e.g. `ws://127.0.0.1:8080/ws`).
    ///
    /// # Errors
    /// [`Error::Build`] as [`build`](Self::build), else as [`Client::connect`].
    pub async fn connect(self, url: &str) -> Result<Client, Error> {
        let client = self.build()?;
        client.connect(url).await?;
        Ok(client)
    }
}

/// A goomerang client. Cheap to clone; clones share the connection.
/// Dropping the last clone closes the connection and stops reconnecting.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    shared: Arc<Shared>,
    state: StateCell,
    /// The live connection, if any; callers waiting out a reconnection watch it.
    current: watch::Sender<Option<Connection>>,
    /// Held across a connect so two connects cannot race.
    connecting: tokio::sync::Mutex<()>,
    next_conn: AtomicU64,
    reconnect: Option<Reconnect>,
    handshake: Handshake,
    /// Topics this client subscribed to, renewed after every reconnection.
    subscriptions: Mutex<BTreeSet<Subscription>>,
    /// Cancelled by `close` (and replaced at the next `connect`): stops the supervisor.
    stop: Mutex<CancellationToken>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        lock(&self.stop).cancel();
        if let Some(conn) = self.current.borrow().as_ref() {
            conn.start_close(1000, "client dropped");
        }
    }
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            router: Router::new(),
            config: Config::default(),
            hooks: Hooks::new("client"),
            reconnect: Some(Reconnect::default()),
            handshake: Handshake::default(),
            session: None,
            error: None,
        }
    }

    /// Connects to `url` (NEW or CLOSED → RUNNING), offering the `goomerang.v1`
    /// subprotocol. With a reconnect policy, a later loss of the connection is
    /// repaired in the background until [`close`](Self::close).
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if connected, [`Error::ShuttingDown`] while
    /// closing, [`Error::InvalidUrl`] for a bad URL, [`Error::Refused`] if the
    /// server answered with an HTTP error, [`Error::Connect`] otherwise.
    pub async fn connect(&self, url: &str) -> Result<(), Error> {
        let _connecting = self.inner.connecting.lock().await;
        match self.inner.state.get() {
            State::Running => return Err(Error::AlreadyRunning),
            State::Closing => return Err(Error::ShuttingDown),
            State::New | State::Closed => {}
        }
        // A supervisor still retrying an earlier URL stops here.
        let stop = {
            let mut stop = lock(&self.inner.stop);
            stop.cancel();
            *stop = CancellationToken::new();
            stop.clone()
        };
        let urls: Vec<String> = std::iter::once(url.to_owned())
            .chain(self.inner.handshake.fallbacks.iter().cloned())
            .collect();
        let mut dialled = Err(Error::NotRunning);
        let mut at = 0;
        for (i, candidate) in urls.iter().enumerate() {
            let session = self.session_key();
            dialled = dial(
                candidate,
                self.inner.shared.config(),
                &self.inner.handshake,
                session.as_deref(),
            )
            .await;
            if dialled.is_ok() {
                at = i;
                break;
            }
        }
        let (ws, peer) = dialled?;
        let shared = &self.inner.shared;
        shared.set_shutting_down(false);
        shared.handlers().reopen();
        shared.connections().reopen();
        let conn = self.inner.install(peer);
        shared.connections().spawn(supervise(
            Arc::downgrade(&self.inner),
            urls,
            at,
            ws,
            conn,
            stop,
            Arc::clone(shared),
        ));
        Ok(())
    }

    /// This client's metrics: register them into your `prometheus-client`
    /// registry, or read them with [`Metrics::render`].
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.inner.shared.metrics())
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.inner.state.get()
    }

    /// The current connection.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected (or reconnecting).
    pub fn connection(&self) -> Result<Connection, Error> {
        // A match, not `ok_or`: that builds and drops an `Error` on every call.
        match self.inner.current.borrow().as_ref() {
            Some(conn) if !conn.is_closed() => Ok(conn.clone()),
            _ => Err(Error::NotRunning),
        }
    }

    /// The connection to use for a call that may wait `timeout`: the current
    /// one, or, while reconnecting under [`WhileDisconnected::Wait`], the next one.
    async fn connection_by(&self, timeout: Duration) -> Result<Connection, Error> {
        if let Ok(conn) = self.connection() {
            return Ok(conn);
        }
        let deadline = Instant::now() + timeout;
        let waits = self
            .inner
            .reconnect
            .as_ref()
            .is_some_and(|r| r.while_disconnected == WhileDisconnected::Wait);
        if !waits
            || self.inner.state.get() == State::Closing
            || lock(&self.inner.stop).is_cancelled()
        {
            return Err(Error::NotRunning);
        }
        let mut watcher = self.inner.current.subscribe();
        let wait = watcher.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed()));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(conn)) => conn.clone().ok_or(Error::NotRunning),
            _ => Err(Error::NotRunning),
        }
    }

    /// The current connection, else the wait for the next one, boxed (see
    /// [`connection_by`](Self::connection_by)): a send's future, moved
    /// (copied) at each `.await` on its way down, stays small.
    async fn connection_or_wait(&self) -> Result<Connection, Error> {
        match self.connection() {
            Ok(conn) => Ok(conn),
            Err(_) => Box::pin(self.connection_by(self.default_timeout())).await,
        }
    }

    fn default_timeout(&self) -> Duration {
        self.inner.shared.config().request_timeout
    }

    /// Sends a one-way message to the server; see [`Connection::send`].
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected (after waiting for a
    /// reconnection, if the policy says so), else as [`Connection::send`].
    pub async fn send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        self.send_method("", message).await
    }

    /// Sends a one-way message to method `method` of the server; see
    /// [`Connection::send_method`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_method<T: Payload>(
        &self,
        method: &str,
        message: impl IntoMessage<T>,
    ) -> Result<(), Error> {
        self.connection_or_wait()
            .await?
            .send_method(method, message)
            .await
    }

    /// Sends a one-way message without waiting for queue room or a
    /// reconnection; see [`Connection::try_send`].
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected, else as [`Connection::try_send`].
    pub fn try_send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        self.connection()?.try_send(message)
    }

    /// Sends a request to the server and awaits the reply; see [`Connection::request`].
    ///
    /// # Errors
    /// UNAVAILABLE when not connected (after waiting for a reconnection up to
    /// the request's deadline, if the policy says so), else as [`Connection::request`].
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> Result<Response<Resp>, Status> {
        self.request_method("", message).await
    }

    /// Sends a request to method `method` of the server and awaits the reply;
    /// see [`Connection::request_method`].
    ///
    /// # Errors
    /// As [`request`](Self::request) and [`Connection::request_method`].
    pub async fn request_method<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<Req>,
    ) -> Result<Response<Resp>, Status> {
        let message = message.into_message();
        if let Ok(conn) = self.connection() {
            return conn.request_method(method, message).await;
        }
        // Boxed: the rare path stays out of every request's future.
        Box::pin(self.request_when_connected(method, message)).await
    }

    /// [`request_method`](Self::request_method) while disconnected: the wait
    /// for a reconnection counts against the deadline.
    async fn request_when_connected<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: Message<Req>,
    ) -> Result<Response<Resp>, Status> {
        let timeout = message.timeout_or(self.inner.shared.config().request_timeout);
        let started = Instant::now();
        let conn = self.connection_by(timeout).await?;
        let remaining = timeout.saturating_sub(started.elapsed());
        conn.request_method(
            method,
            message.timeout(remaining.max(Duration::from_millis(1))),
        )
        .await
    }

    /// Asks the server to deliver a one-way message to every connection
    /// (this one included). Returns once queued; the server reports a refusal
    /// through the `on_error` hook.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn broadcast<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        let bytes = frame::encode_message(FrameKind::Broadcast, "", "", message.into_message());
        self.connection_or_wait().await?.enqueue(bytes).await
    }

    /// Publishes a one-way message on `topic` (no wildcards) through the
    /// server to its subscribers. Returns once queued.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`] for a malformed topic, else as [`send`](Self::send).
    pub async fn publish<T: Payload>(
        &self,
        topic: &str,
        message: impl IntoMessage<T>,
    ) -> Result<(), Error> {
        topic::validate(topic, false).map_err(Error::InvalidTopic)?;
        let bytes = frame::encode_message(FrameKind::Publish, topic, "", message.into_message());
        self.connection_or_wait().await?.enqueue(bytes).await
    }

    /// Subscribes to `pattern` (`chat.room1`, `chat.*`, `chat.>`); messages
    /// arrive at the handler for their type, with `ctx.metadata().topic()` set.
    /// Returns once the server confirmed. Renewed after every reconnection:
    /// on a topic the server keeps a history for, from the last position
    /// received, so what was published meanwhile arrives first (or, if the
    /// server can no longer replay it, `on_error` gets
    /// [`Incident::Unrecoverable`]).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed pattern, RESOURCE_EXHAUSTED at the
    /// server's subscription limit, UNAVAILABLE when not connected.
    pub async fn subscribe(&self, pattern: &str) -> Result<(), Status> {
        self.subscription(FrameKind::Subscribe, pattern, None, None)
            .await
            .map(drop)
    }

    /// Subscribes to `topic` (no wildcards) from `from`, a position this
    /// client (or an earlier run of it, which saved
    /// `ctx.metadata().position()`) reached: the server first sends what
    /// was published after it, if its history still holds all of it.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe); INVALID_ARGUMENT for a topic with
    /// wildcards.
    pub async fn subscribe_from(&self, topic: &str, from: &Position) -> Result<Recovery, Status> {
        topic::validate(topic, false).map_err(|e| Status::from(Error::InvalidTopic(e)))?;
        Ok(
            match self
                .subscription(FrameKind::Subscribe, topic, None, Some(from))
                .await?
            {
                Some(true) => Recovery::Recovered,
                Some(false) => Recovery::Unrecoverable,
                None => Recovery::NoHistory,
            },
        )
    }

    /// The session key the server gave this client (PROTOCOL.md, Sessions),
    /// presented whenever it reconnects; `None` when it has none. Save it to
    /// resume the session from another process with
    /// [`ClientBuilder::session_key`].
    pub fn session_key(&self) -> Option<String> {
        self.inner.shared.session_key().and_then(|held| held.get())
    }

    /// The last position this client received on `topic` (a topic the
    /// server keeps a history for), as it would recover from.
    pub fn position(&self, topic: &str) -> Option<Position> {
        self.positions().get(topic)
    }

    fn positions(&self) -> &Arc<Positions> {
        self.inner
            .shared
            .positions()
            .expect("a client's shared state tracks positions")
    }

    /// Subscribes in queue group `group`: each message on a matching topic
    /// goes to one member of the group (round-robin).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_group(&self, pattern: &str, group: &str) -> Result<(), Status> {
        self.subscription(FrameKind::Subscribe, pattern, Some(group), None)
            .await
            .map(drop)
    }

    /// Undoes [`subscribe`](Self::subscribe).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&self, pattern: &str) -> Result<(), Status> {
        self.subscription(FrameKind::Unsubscribe, pattern, None, None)
            .await
            .map(drop)
    }

    /// Undoes [`subscribe_group`](Self::subscribe_group).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe_group(&self, pattern: &str, group: &str) -> Result<(), Status> {
        self.subscription(FrameKind::Unsubscribe, pattern, Some(group), None)
            .await
            .map(drop)
    }

    /// Sends a SUBSCRIBE (from `from`, if given) or UNSUBSCRIBE, and keeps
    /// the subscription set and the positions in step. For a topic with
    /// history, says whether what came after `from` was recovered.
    async fn subscription(
        &self,
        kind: FrameKind,
        pattern: &str,
        group: Option<&str>,
        from: Option<&Position>,
    ) -> Result<Option<bool>, Status> {
        topic::validate(pattern, true).map_err(|e| Status::from(Error::InvalidTopic(e)))?;
        let sub = Subscription {
            pattern: pattern.to_owned(),
            group: group.map(str::to_owned),
        };
        let conn = self.connection_or_wait().await?;
        let reply = conn.control(kind, &sub, from).await?;
        let exact = sub.group.is_none();
        let mut subs = lock(&self.inner.subscriptions);
        if kind == FrameKind::Subscribe {
            subs.insert(sub);
            let Some(position) = reply.filter(|_| exact) else {
                return Ok(None);
            };
            // Recover from here if the connection drops before a message comes.
            self.positions()
                .record(pattern, Position::new(position.epoch, position.offset));
            Ok(Some(position.recovered))
        } else {
            if exact {
                self.positions().forget(pattern);
            }
            subs.remove(&sub);
            Ok(None)
        }
    }

    /// The subscriptions this client holds (and renews after reconnecting).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        lock(&self.inner.subscriptions).iter().cloned().collect()
    }

    /// Closes gracefully: RUNNING → CLOSING → CLOSED, and stops reconnecting.
    /// New requests fail with UNAVAILABLE, handlers serving the server's
    /// requests finish (bounded by the close timeout), then the connection
    /// closes with 1000.
    ///
    /// # Errors
    /// [`Error::NotRunning`] if neither connected nor reconnecting,
    /// [`Error::ShuttingDown`] if already closing.
    pub async fn close(&self) -> Result<(), Error> {
        let was_retrying = !lock(&self.inner.stop).is_cancelled();
        match self.inner.state.transition(State::Running, State::Closing) {
            Ok(()) => {}
            Err(State::Closing) => return Err(Error::ShuttingDown),
            Err(State::Closed) if was_retrying && self.inner.reconnect.is_some() => {
                // Between connections: just stop the supervisor.
                lock(&self.inner.stop).cancel();
                self.inner.shared.connections().close();
                self.inner.shared.connections().wait().await;
                return Ok(());
            }
            Err(_) => return Err(Error::NotRunning),
        }
        let shared = &self.inner.shared;
        shared.hooks().state(State::Closing);
        lock(&self.inner.stop).cancel();
        shared.set_shutting_down(true);
        shared.handlers().close();
        let _ = tokio::time::timeout(shared.config().close_timeout, shared.handlers().wait()).await;
        let conn = self.inner.current.borrow().clone();
        if let Some(conn) = conn {
            conn.close().await;
        }
        shared.connections().close();
        shared.connections().wait().await;
        self.inner.current.send_replace(None);
        self.inner.state.set(State::Closed);
        shared.hooks().state(State::Closed);
        Ok(())
    }
}

impl ClientInner {
    /// Makes a new connection (to `peer`) the current one: RUNNING.
    fn install(&self, peer: Option<std::net::SocketAddr>) -> Connection {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = Connection::new(
            id,
            peer,
            Arc::clone(self.shared.core()),
            http::Extensions::new(),
        );
        self.current.send_replace(Some(conn.clone()));
        self.state.set(State::Running);
        self.shared.hooks().state(State::Running);
        conn
    }
}

/// Runs the client's connection; when it is lost (not closed by `close`),
/// reconnects with backoff per the policy and renews the subscriptions. Holds
/// the client only weakly, so dropping the client ends it.
async fn supervise(
    owner: Weak<ClientInner>,
    urls: Vec<String>,
    mut at: usize,
    mut ws: Ws,
    mut conn: Connection,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    loop {
        driver::run(ws, conn.clone(), Arc::clone(&shared)).await;
        let Some(client) = owner.upgrade() else {
            return;
        };
        if client
            .state
            .transition(State::Running, State::Closed)
            .is_ok()
        {
            client.shared.hooks().state(State::Closed);
        }
        let Some(policy) = client.reconnect.clone() else {
            return;
        };
        if stop.is_cancelled() {
            return;
        }
        let config = client.shared.config().clone();
        let handshake = client.handshake.clone();
        let held = client
            .shared
            .session_key()
            .cloned()
            .expect("a client's shared state holds its session key");
        drop(client);
        let mut attempt = 0;
        let fresh = loop {
            if policy.max_attempts.is_some_and(|max| attempt >= max) {
                return;
            }
            // Jitter from the thread's RNG, so clients started together spread out.
            let delay = policy.delay(attempt, rand::random::<f64>());
            // The URL that was lost first (it may have been a blip), then the others in turn.
            let trying = (at + attempt as usize) % urls.len();
            let dialled = tokio::select! {
                _ = stop.cancelled() => return,
                dialled = async {
                    tokio::time::sleep(delay).await;
                    dial(&urls[trying], &config, &handshake, held.get().as_deref()).await
                } => dialled,
            };
            match dialled {
                Ok(dialled) => {
                    at = trying;
                    break dialled;
                }
                Err(err) => {
                    let Some(client) = owner.upgrade() else {
                        return;
                    };
                    tracing::debug!(attempt, %err, "reconnect attempt failed");
                    client.shared.hooks().error(&Incident::Reconnect(err), None);
                    attempt += 1;
                }
            }
        };
        let Some(client) = owner.upgrade() else {
            return;
        };
        if stop.is_cancelled() {
            return;
        }
        conn = client.install(fresh.1);
        ws = fresh.0;
        let subs: Vec<Subscription> = lock(&client.subscriptions).iter().cloned().collect();
        if !subs.is_empty() {
            // Acks need the reader, which runs below: renew from a task of its own.
            let (renewing, hooks) = (conn.clone(), client.shared.hooks().clone());
            let positions = client
                .shared
                .positions()
                .cloned()
                .expect("a client's shared state tracks positions");
            client.shared.connections().spawn(async move {
                for sub in subs {
                    let from = sub
                        .group
                        .is_none()
                        .then(|| positions.get(&sub.pattern))
                        .flatten();
                    match renewing
                        .control(FrameKind::Subscribe, &sub, from.as_ref())
                        .await
                    {
                        Ok(Some(now)) => {
                            if from.is_some() && !now.recovered {
                                hooks.error(
                                    &Incident::Unrecoverable {
                                        topic: sub.pattern.clone(),
                                    },
                                    Some(&renewing),
                                );
                            }
                            positions.record(&sub.pattern, Position::new(now.epoch, now.offset));
                        }
                        Ok(None) => {}
                        Err(status) => hooks.error(
                            &Incident::Resubscribe {
                                pattern: sub.pattern.clone(),
                                status,
                            },
                            Some(&renewing),
                        ),
                    }
                }
            });
        }
    }
}

/// The TCP connection to `host:port`, from `local` if given (to the first
/// resolved address of its family).
async fn connect_tcp(
    host: &str,
    port: u16,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(local) = local else {
        return tokio::net::TcpStream::connect((host, port)).await;
    };
    let remote = tokio::net::lookup_host((host, port))
        .await?
        .find(|addr| addr.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the local address {local}'s family"),
            )
        })?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    socket.connect(remote).await
}

/// Opens the connection: TCP, TLS for `wss://`, then the WebSocket upgrade
/// offering our subprotocol — all within the handshake timeout.
async fn dial(
    url: &str,
    config: &Config,
    handshake: &Handshake,
    session: Option<&str>,
) -> Result<(Ws, Option<std::net::SocketAddr>), Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut request = url
        .into_client_request()
        .map_err(|err| invalid(&err.to_string()))?;
    let headers = request.headers_mut();
    if let Some(key) = session {
        // The session to resume (PROTOCOL.md, Sessions); a key is hex.
        if let Ok(value) = http::HeaderValue::from_str(key) {
            headers.insert("goomerang-session", value);
        }
    }
    for (name, value) in &handshake.headers {
        headers.insert(name, value.clone());
    }
    let protocols = std::iter::once(SUBPROTOCOL)
        .chain(handshake.subprotocols.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(", ");
    let protocols = HeaderValue::from_str(&protocols)
        .map_err(|_| invalid("a subprotocol is not a valid header value"))?;
    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocols);
    let secure = match request.uri().scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(invalid("the scheme must be ws:// or wss://")),
    };
    #[cfg(not(feature = "tls"))]
    if secure {
        // Refused before anything is dialled.
        return Err(invalid("wss:// needs goomerang's `tls` feature"));
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| invalid("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let opening = async {
        let tcp = connect_tcp(&host, port, handshake.local_address)
            .await
            .map_err(|err| Error::Connect(tungstenite::Error::Io(err)))?;
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().ok();
        #[cfg(not(feature = "tls"))]
        let io = ClientIo::Plain(tcp);
        #[cfg(feature = "tls")]
        let io = if secure {
            let tls = handshake.tls.clone().ok_or(TlsError::NotConfigured)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|source| {
                TlsError::ServerName {
                    name: host.clone(),
                    source,
                }
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(TlsError::Handshake)?;
            ClientIo::Rustls(stream)
        } else {
            ClientIo::Plain(tcp)
        };
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            request,
            HeadFirst::new(io),
            Some(config.websocket()),
        )
        .await
        .map_err(|err| connect_error(url, err))?;
        let (io, leftover) = ws.into_inner().into_parts();
        let ws = Upgraded {
            io: Box::new(io),
            leftover,
            role: Role::Client,
        };
        Ok((ws, peer))
    };
    match tokio::time::timeout(config.handshake_timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(Error::Connect(tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {:?}", config.handshake_timeout),
        )))),
    }
}

fn connect_error(url: &str, err: tungstenite::Error) -> Error {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let reason = if body.is_empty() {
                status.canonical_reason().unwrap_or("").to_owned()
            } else {
                body
            };
            Error::Refused {
                status: status.as_u16(),
                reason,
            }
        }
        tungstenite::Error::Url(reason) => Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_string(),
        },
        other => Error::Connect(other),
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field(
                "connection",
                &self.inner.current.borrow().as_ref().map(Connection::id),
            )
            .field("subscriptions", &lock(&self.inner.subscriptions).len())
            .finish()
    }
}

impl Peer for Client {
    fn send<T: Payload>(
        &self,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        Client::send(self, message)
    }

    fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send {
        Client::request(self, message)
    }

    fn send_method<T: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        Client::send_method(self, method, message)
    }

    fn request_method<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send {
        Client::request_method(self, method, message)
    }
}

#[cfg(all(test, not(feature = "tls")))]
mod without_tls {
    use super::*;

    #[tokio::test]
    async fn wss_urls_are_refused_without_the_tls_feature() {
        let err = Client::builder()
            .reconnect(None)
            .connect("wss://127.0.0.1:1/ws")
            .await
            .expect_err("no TLS in this build");
        match err {
            Error::InvalidUrl { reason, .. } => {
                assert_eq!(reason, "wss:// needs goomerang's `tls` feature")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
