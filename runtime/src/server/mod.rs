//! `Server`: accepts WebSocket upgrades over axum, runs a driver per connection, and shuts down gracefully.

pub(crate) mod handshake;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::conn::connection::Connection;
use crate::conn::limit::{Limit, Slot};
use crate::conn::session::{MemorySessions, SessionData, SessionStore, Sessions};
use crate::driver;
use crate::driver::shared::Shared;
use crate::error::{BuildError, Error};
use crate::hooks::{Hooks, hook_methods};
use crate::incident::Incident;
#[cfg(feature = "metrics")]
use crate::observe::export::Metrics;
use crate::pubsub::access::Access;
use crate::pubsub::backplane::{Backplane, LocalOnly, SharedBackplane};
use crate::pubsub::history::History;
use crate::pubsub::hub::Hub;
use crate::pubsub::presence::{Label, Presence};
use crate::route::router::{Router, routing_methods};
use crate::state::{State, StateCell};
use crate::sync::lock;
use crate::wire::frame::{self, SUBPROTOCOL};
use crate::wire::message::{IntoMessage, Payload, TypeName};
use crate::wire::proto::FrameKind;
use crate::wire::status::Status;
use crate::wire::topic::{self, Subscription};
use crate::ws::io::Io;
use crate::ws::{Role, Upgraded};
use handshake::{Accept, Handshake, OnOpen, Origins, Reject};

/// How long killed tasks get to unwind at the end of a shutdown.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The default WebSocket endpoint path.
pub const DEFAULT_PATH: &str = "/ws";

/// Builds a [`Server`]: handlers, middleware, hooks, limits and the endpoint path.
#[must_use = "a builder does nothing until it is used"]
pub struct ServerBuilder {
    router: Router,
    config: Config,
    hooks: Hooks,
    path: String,
    backplane: SharedBackplane,
    routes: axum::Router,
    on_open: Option<OnOpen>,
    origins: Option<Origins>,
    #[cfg(feature = "metrics")]
    metrics_path: Option<String>,
    access: Access,
    /// Labels connections in presence lists.
    presence_label: Option<Label>,
    /// Topic history rules, first match wins.
    history: Vec<(String, History)>,
    /// A backplane other than the in-process default was given.
    custom_backplane: bool,
    /// Where sessions live, and for how long.
    sessions: Sessions,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("router", &self.router)
            .field("config", &self.config)
            .field("path", &self.path)
            .field("on_open", &self.on_open.is_some())
            .field("origins", &self.origins)
            .finish()
    }
}

impl ServerBuilder {
    routing_methods!();
    hook_methods!();

    /// Serves these HTTP routes on the same port as the WebSocket endpoint
    /// (e.g. `/health`, `/metrics`). Merged with earlier calls; a route on the
    /// WebSocket path is a start-up error (axum panics on overlapping routes).
    pub fn routes(mut self, routes: axum::Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Runs before every upgrade with the request (headers, query, peer
    /// address, offered subprotocols): return [`Accept`] — optionally with
    /// state the connection carries, read by `Connection::state` — or
    /// [`Reject`] to answer with an HTTP status instead (401, 403, ...).
    /// Setting it again replaces the previous hook.
    ///
    /// ```
    /// use goomerang::{Accept, Reject, Server};
    /// #[derive(Clone)]
    /// struct User(String);
    /// let server = Server::builder()
    ///     .on_open(|hs| async move {
    ///         match hs.header("authorization").or(hs.query("token").as_deref()) {
    ///             Some("secret") => Ok(Accept::new().with(User("ada".into()))),
    ///             _ => Err(Reject::unauthorized("missing or wrong token")),
    ///         }
    ///     })
    ///     .build().expect("valid routes");
    /// # let _ = server;
    /// ```
    pub fn on_open<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Accept, Reject>> + Send + 'static,
    {
        self.on_open = Some(handshake::on_open(hook));
        self
    }

    #[cfg(feature = "tls")]
    /// Serves `wss://` (and HTTPS routes) with this rustls configuration, e.g.
    /// [`tls::server_config`](crate::tls::server_config) from PEM files.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Serves this server's Prometheus metrics at `path` (e.g. `/metrics`) on
    /// the same port as the WebSocket endpoint, in the OpenMetrics text format.
    #[cfg(feature = "metrics")]
    pub fn metrics_path(mut self, path: impl Into<String>) -> Self {
        self.metrics_path = Some(path.into());
        self
    }

    /// Browser origins allowed to connect: exact (`https://app.example.com`)
    /// or subdomain wildcards (`https://*.example.com`); `*` allows any. Other
    /// origins get HTTP 403. Requests without an Origin header (non-browser
    /// clients) are always allowed. Default: any origin.
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.origins = Some(Origins::new(origins));
        self
    }

    /// Says who a connection is in [`Server::presence`] lists, e.g. the
    /// user's name from its handshake state. Without it, labels are empty.
    pub fn presence_label(
        mut self,
        label: impl Fn(&Connection) -> String + Send + Sync + 'static,
    ) -> Self {
        self.presence_label = Some(Arc::new(label));
        self
    }

    /// Carries broadcasts and publishes to other replicas; see [`Backplane`].
    /// Default [`LocalOnly`](crate::pubsub::LocalOnly).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Arc::new(backplane);
        self.custom_backplane = true;
        self
    }

    /// Where connections' sessions ([`Connection::create_session`]) live,
    /// and how long one lives after it was created or last resumed. The
    /// default is [`MemorySessions`] (this process only) and 24 hours; give
    /// replicas one shared store (`goomerang_redis::RedisSessions`) so a
    /// client resumes its session on any of them.
    pub fn sessions(mut self, store: impl SessionStore, ttl: Duration) -> Self {
        self.sessions = Sessions {
            store: Arc::new(store),
            ttl,
        };
        self
    }

    /// Keeps a history for the topics matching `pattern` (the first pattern
    /// given that matches a topic decides): its last `history.max_len`
    /// messages, none older than `history.max_age`. Messages delivered on
    /// such a topic carry their position (epoch and offset), and a client
    /// that comes back recovers what it missed (see the pub/sub guide).
    /// With a backplane, its broker must number the messages (the Redis
    /// engine does; `build` refuses one that does not).
    pub fn history(mut self, pattern: impl Into<String>, history: History) -> Self {
        self.history.push((pattern.into(), history));
        self
    }

    /// Decides which subscriptions a client may make (`SUBSCRIBE`); a refused
    /// one is answered `PERMISSION_DENIED` and counted in
    /// `goomerang_pubsub_refused_total{action="subscribe"}`. The connection's
    /// handshake state (`conn.state::<T>()`) and data are at hand. Without a
    /// policy any client may subscribe to any pattern.
    pub fn authorize_subscribe(
        mut self,
        policy: impl Fn(&Connection, &Subscription) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.access.set_subscribe(Arc::new(policy));
        self
    }

    /// Decides on which topics a client may publish (`PUBLISH`); a refused
    /// publish reaches nobody and is answered `PERMISSION_DENIED`. Without a
    /// policy any client may publish on any topic.
    pub fn authorize_publish(
        mut self,
        policy: impl Fn(&Connection, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.access.set_publish(Arc::new(policy));
        self
    }

    /// Lets clients broadcast (`BROADCAST`) to every connection, when `policy`
    /// says so for the sender. Client broadcast is **off** by default: a
    /// client's broadcast is answered `PERMISSION_DENIED` and reaches nobody.
    /// `allow_client_broadcast(|_conn| true)` lets every client broadcast.
    /// (`Server::broadcast` is the server's own and always allowed.)
    pub fn allow_client_broadcast(
        mut self,
        policy: impl Fn(&Connection) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.access.set_broadcast(Arc::new(policy));
        self
    }

    /// Called after every broadcast with the payload type and how many connections it reached.
    pub fn on_broadcast(mut self, hook: impl Fn(&str, usize) + Send + Sync + 'static) -> Self {
        self.hooks.add_broadcast(Arc::new(hook));
        self
    }

    /// Called after every publish with the topic, payload type and how many subscribers it reached.
    pub fn on_publish(mut self, hook: impl Fn(&str, &str, usize) + Send + Sync + 'static) -> Self {
        self.hooks.add_publish(Arc::new(hook));
        self
    }

    /// Called when a connection adds a subscription.
    pub fn on_subscribe(
        mut self,
        hook: impl Fn(&Connection, &Subscription) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add_subscribe(Arc::new(hook));
        self
    }

    /// Called when a connection removes a subscription (not for the cleanup at disconnect).
    pub fn on_unsubscribe(
        mut self,
        hook: impl Fn(&Connection, &Subscription) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add_unsubscribe(Arc::new(hook));
        self
    }

    /// The HTTP path of the WebSocket endpoint. Default [`DEFAULT_PATH`] (`/ws`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Finishes the server (state NEW); start it with [`Server::serve`] or [`Server::run`].
    ///
    /// # Errors
    /// A [`BuildError`] for a route registered twice, a malformed method name,
    /// or middleware scoped to nothing.
    pub fn build(self) -> Result<Server, BuildError> {
        for (pattern, _) in &self.history {
            topic::validate(pattern, true).map_err(|source| BuildError::InvalidHistory {
                pattern: pattern.clone(),
                reason: source.to_string(),
            })?;
        }
        if self.custom_backplane && !self.history.is_empty() && !self.backplane.numbers_history() {
            return Err(BuildError::InvalidHistory {
                pattern: self.history[0].0.clone(),
                reason:
                    "history is kept in this process, and replicas on a backplane would number \
                         messages apart; use it without a backplane"
                        .to_owned(),
            });
        }
        let hooks = self.hooks.finish()?;
        let routes = self.router.finish(hooks.metrics())?;
        let hub = Arc::new(Hub::new(
            self.backplane,
            self.config.slow_consumer,
            self.config.max_subscriptions_per_connection,
            hooks.clone(),
            self.access,
            self.presence_label,
            self.history,
        ));
        #[cfg(feature = "metrics")]
        let metrics = Metrics::new(hooks.metrics());
        let max_connections = self.config.max_connections;
        let shared = Shared::new(
            routes,
            self.config,
            hooks,
            Some(Arc::clone(&hub)),
            Some(self.sessions),
        );
        Ok(Server {
            inner: Arc::new(ServerInner {
                shared,
                hub,
                state: StateCell::new(),
                path: self.path,
                addr: Mutex::new(None),
                admission: Arc::new(Limit::new(max_connections)),
                next_conn: AtomicU64::new(1),
                stop: CancellationToken::new(),
                #[cfg(feature = "metrics")]
                routes: match self.metrics_path {
                    Some(path) => self.routes.merge(
                        axum::Router::new()
                            .route(&path, axum::routing::get(render_metrics))
                            .with_state(metrics),
                    ),
                    None => self.routes,
                },
                #[cfg(not(feature = "metrics"))]
                routes: self.routes,
                on_open: self.on_open,
                origins: self.origins,
                #[cfg(feature = "tls")]
                tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
            }),
        })
    }
}

/// A goomerang server. Cheap to clone; clones are the same server.
///
/// ```no_run
/// # async fn demo() -> Result<(), goomerang::Error> {
/// let server = goomerang::Server::builder().build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(goomerang::Error::Listen)?;
/// let running = tokio::spawn({
///     let server = server.clone();
///     async move { server.serve(listener).await }
/// });
/// // ... later:
/// server.shutdown(std::time::Duration::from_secs(5)).await?;
/// # let _ = running.await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    shared: Arc<Shared>,
    state: StateCell,
    path: String,
    addr: Mutex<Option<SocketAddr>>,
    /// Live connections, topics and fan-out.
    hub: Arc<Hub>,
    /// Connection slots (`Config::max_connections`): taken before `on_open`
    /// runs, held until the connection has ended, so concurrent upgrades can
    /// never admit more than the limit.
    admission: Arc<Limit>,
    next_conn: AtomicU64,
    /// Cancelled at the end of shutdown: stops accepting, which ends `serve`.
    stop: CancellationToken,
    /// The user's routes served beside the endpoint.
    routes: axum::Router,
    on_open: Option<OnOpen>,
    origins: Option<Origins>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::new(),
            config: Config::default(),
            hooks: Hooks::new("server"),
            path: DEFAULT_PATH.to_owned(),
            backplane: Arc::new(LocalOnly),
            routes: axum::Router::new(),
            on_open: None,
            origins: None,
            #[cfg(feature = "metrics")]
            metrics_path: None,
            access: Access::default(),
            presence_label: None,
            history: Vec::new(),
            custom_backplane: false,
            sessions: Sessions {
                store: Arc::new(MemorySessions::new()),
                ttl: Duration::from_secs(24 * 60 * 60),
            },
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Binds `addr` and serves until [`shutdown`](Self::shutdown) completes.
    ///
    /// # Errors
    /// [`Error::Listen`] if binding fails, otherwise as [`serve`](Self::serve).
    pub async fn run(&self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let listener = TcpListener::bind(addr).await.map_err(Error::Listen)?;
        self.serve(listener).await
    }

    /// Serves on `listener` until [`shutdown`](Self::shutdown) completes
    /// (NEW → RUNNING; returns after CLOSED).
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`], [`Error::ShuttingDown`] or [`Error::Closed`]
    /// when the server is not NEW; [`Error::Listen`] if the listener fails.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        let addr = listener.local_addr().map_err(Error::Listen)?;
        self.start()?;
        *lock(&self.inner.addr) = Some(addr);
        tracing::info!(%addr, path = %self.inner.path, tls = self.is_tls(), "goomerang server running");
        let app = self.app();
        let stop = self.inner.stop.clone();
        // HTTP connections before their upgrade (and plain HTTP routes); they
        // finish, gracefully, when the server stops.
        let http = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: report, pause, go on.
                    self.inner
                        .shared
                        .hooks()
                        .error(&Incident::Accept(err), None);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(
                app.clone().layer(axum::Extension(ConnectInfo(peer))),
            );
            let stop = stop.clone();
            let timeout = self.inner.shared.config().handshake_timeout;
            #[cfg(feature = "tls")]
            if let Some(acceptor) = self.inner.tls.clone() {
                http.spawn(async move {
                    // The TLS handshake is bounded too (slowloris).
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(timeout, acceptor.accept(tcp)).await
                    {
                        serve_http(stream, service, timeout, stop).await;
                    }
                });
                continue;
            }
            http.spawn(serve_http(tcp, service, timeout, stop));
        }
        http.close();
        let _ = tokio::time::timeout(self.inner.shared.config().close_timeout, http.wait()).await;
        Ok(())
    }

    /// Serves on `listener` until `signal` resolves (Ctrl-C, a deploy hook),
    /// then shuts down gracefully as [`shutdown`](Self::shutdown) does, with
    /// [`Config::shutdown_timeout`](crate::Config::shutdown_timeout) as the
    /// drain deadline. Returns once the server is CLOSED.
    ///
    /// ```no_run
    /// # async fn demo(server: goomerang::Server) -> Result<(), goomerang::Error> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.map_err(goomerang::Error::Listen)?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # drop(stop);
    /// server.serve_with_shutdown(listener, async { let _ = stopped.await; }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`serve`](Self::serve), then as [`shutdown`](Self::shutdown). If the
    /// server was shut down some other way first, returns as `serve` does.
    pub async fn serve_with_shutdown(
        &self,
        listener: TcpListener,
        signal: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let serving = self.serve(listener);
        tokio::pin!(serving, signal);
        tokio::select! {
            served = &mut serving => return served,
            () = &mut signal => {}
        }
        let timeout = self.inner.shared.config().shutdown_timeout;
        let (served, shut) = tokio::join!(serving, self.shutdown(timeout));
        served?;
        match shut {
            // Someone else started the shutdown meanwhile: it is theirs to report.
            Err(Error::ShuttingDown | Error::Closed) => Ok(()),
            other => other,
        }
    }

    /// Starts the server (NEW → RUNNING) without a listener of its own and
    /// returns its routes — the WebSocket endpoint plus [`routes`](ServerBuilder::routes) —
    /// to mount inside an axum (tower) application you serve yourself. Serve
    /// that app with `into_make_service_with_connect_info::<SocketAddr>()` for
    /// peer addresses. [`shutdown`](Self::shutdown) works as usual; stopping the
    /// outer app is yours.
    ///
    /// # Errors
    /// As [`serve`](Self::serve) when the server is not NEW.
    pub fn mount(&self) -> Result<axum::Router, Error> {
        self.start()?;
        Ok(self.app())
    }

    fn start(&self) -> Result<(), Error> {
        self.inner
            .state
            .transition(State::New, State::Running)
            .map_err(|found| match found {
                State::Running => Error::AlreadyRunning,
                State::Closing => Error::ShuttingDown,
                _ => Error::Closed,
            })?;
        Hub::start_backplane(&self.inner.hub);
        self.inner.shared.hooks().state(State::Running);
        Ok(())
    }

    fn app(&self) -> axum::Router {
        axum::Router::new()
            .route(&self.inner.path, axum::routing::any(upgrade))
            .with_state(Arc::clone(&self.inner))
            .merge(self.inner.routes.clone())
    }

    /// Whether this server serves `wss://`.
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.inner.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The address being served, once running.
    pub fn addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.addr)
    }

    /// This server's metrics: register them into your `prometheus-client`
    /// registry, or read them with [`Metrics::render`].
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.inner.shared.metrics())
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.inner.state.get()
    }

    /// All live connections.
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.hub.connections()
    }

    /// One live connection by id.
    pub fn connection(&self, id: u64) -> Option<Connection> {
        self.inner.hub.connection(id)
    }

    /// Who is subscribed to `topic` (by any pattern matching it, queue
    /// groups included), here and, with a backplane, on every replica: the
    /// count, and at most `limit` of them (this replica's first). A replica
    /// that does not answer within half a second is left out and the result
    /// says it is incomplete.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`] for a malformed topic (or one with wildcards).
    pub async fn presence(&self, topic: &str, limit: usize) -> Result<Presence, Error> {
        topic::validate(topic, false).map_err(Error::InvalidTopic)?;
        Ok(self.inner.hub.presence(topic, limit).await)
    }

    /// Sends a one-way message to every connection (of every replica, with a
    /// backplane). The frame is encoded once; each recipient's queue takes it
    /// without waiting, so a slow client never delays this call or anyone
    /// else (see [`SlowConsumer`](crate::SlowConsumer)). Returns how many local
    /// connections it was queued for.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if the frame exceeds the message size limit.
    pub fn broadcast<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<usize, Error> {
        self.fan_out(None, None, message)
    }

    /// Like [`broadcast`](Self::broadcast), to every connection but `except`.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast).
    pub fn broadcast_except<T: Payload>(
        &self,
        except: &Connection,
        message: impl IntoMessage<T>,
    ) -> Result<usize, Error> {
        self.fan_out(None, Some(except.id()), message)
    }

    /// Publishes a one-way message on `topic` to its subscribers (wildcards
    /// and queue groups applied), encoded once, never waiting on a recipient.
    /// Returns how many local subscribers it was queued for.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`] for a malformed topic (or one with wildcards),
    /// [`Error::MessageTooLarge`] if the frame exceeds the size limit.
    pub fn publish<T: Payload>(
        &self,
        topic: &str,
        message: impl IntoMessage<T>,
    ) -> Result<usize, Error> {
        topic::validate(topic, false).map_err(Error::InvalidTopic)?;
        self.fan_out(Some(topic), None, message)
    }

    fn fan_out<T: Payload>(
        &self,
        topic: Option<&str>,
        except: Option<u64>,
        message: impl IntoMessage<T>,
    ) -> Result<usize, Error> {
        let frame = frame::encode_message(
            FrameKind::Message,
            topic.unwrap_or(""),
            "",
            message.into_message(),
        );
        let max = self.inner.shared.config().max_message_size;
        if frame.len() > max {
            return Err(Error::MessageTooLarge {
                size: frame.len(),
                max,
            });
        }
        let hooks = &self.inner.shared.hooks();
        let type_name = TypeName::of::<T>().to_string();
        Ok(match topic {
            Some(topic) => {
                let reached = self.inner.hub.publish(topic, frame);
                hooks.publish(topic, &type_name, reached);
                reached
            }
            None => {
                let started = std::time::Instant::now();
                let reached = self.inner.hub.broadcast(frame, except);
                hooks.metrics().broadcast_took(started.elapsed());
                hooks.broadcast(&type_name, reached);
                reached
            }
        })
    }

    /// Shuts down gracefully within `timeout`: RUNNING → CLOSING → CLOSED.
    ///
    /// While closing, new upgrades get HTTP 503 and new requests get
    /// UNAVAILABLE. In-flight handlers finish first, then every connection is
    /// closed with 1001 (going away) in parallel — a peer that does not answer
    /// the close within the close timeout is dropped — then the listener stops.
    /// Returns once every task the server owns has ended.
    ///
    /// # Errors
    /// [`Error::NotRunning`] if never started, [`Error::ShuttingDown`] if
    /// already closing, [`Error::Closed`] if closed; [`Error::ShutdownTimedOut`]
    /// if handlers were still running at the deadline (they were cancelled; the
    /// server is CLOSED all the same).
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.shutdown_with(timeout, 1001, "server shutting down")
            .await
    }

    /// [`shutdown`](Self::shutdown) with another close code and reason, e.g.
    /// 1012 (service restart) so that clients know to reconnect soon.
    ///
    /// # Errors
    /// As [`shutdown`](Self::shutdown).
    pub async fn shutdown_with(
        &self,
        timeout: Duration,
        code: u16,
        reason: &str,
    ) -> Result<(), Error> {
        self.inner
            .state
            .transition(State::Running, State::Closing)
            .map_err(|found| match found {
                State::New => Error::NotRunning,
                State::Closing => Error::ShuttingDown,
                _ => Error::Closed,
            })?;
        let shared = &self.inner.shared;
        shared.hooks().state(State::Closing);
        let deadline = tokio::time::Instant::now() + timeout;
        shared.set_shutting_down(true);
        // 1. In-flight handlers finish (new work is refused meanwhile).
        shared.handlers().close();
        let drained = tokio::time::timeout_at(deadline, shared.handlers().wait())
            .await
            .is_ok();
        let remaining = shared.handlers().len();
        if !drained {
            // Callers still waiting are told why, before their connection closes.
            let status = Status::unavailable(format!(
                "the server shut down ({timeout:?} deadline) before this request's handler finished"
            ));
            for conn in self.connections() {
                conn.abandon_inflight(&status);
            }
            shared.abort().cancel();
        }
        // 2. Every connection gets a close frame, in parallel. A peer that does
        //    not answer within the close timeout (or the deadline) is cut off:
        //    that is the peer's failure, not the shutdown's.
        for conn in self.connections() {
            conn.start_close(code, reason);
        }
        shared.connections().close();
        let handshake_deadline =
            deadline.min(tokio::time::Instant::now() + shared.config().close_timeout);
        if tokio::time::timeout_at(handshake_deadline, shared.connections().wait())
            .await
            .is_err()
        {
            for conn in self.connections() {
                conn.kill();
            }
        }
        // Killed connections and aborted handlers end at their next await.
        let _ = tokio::time::timeout(KILL_GRACE, async {
            shared.handlers().wait().await;
            shared.connections().wait().await;
        })
        .await;
        let result = if drained {
            Ok(())
        } else {
            Err(Error::ShutdownTimedOut { remaining })
        };
        self.inner.stop.cancel();
        self.inner.state.set(State::Closed);
        shared.hooks().state(State::Closed);
        result
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state())
            .field("addr", &self.addr())
            .field("path", &self.inner.path)
            .finish()
    }
}

/// The subprotocols a client offered, in order.
fn offered_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(feature = "metrics")]
async fn render_metrics(AxumState(metrics): AxumState<Metrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// Serves one HTTP/1.1 connection (with upgrades) until it ends or the server
/// stops; request headers must arrive within `timeout`.
async fn serve_http<I, S>(io: I, service: S, timeout: Duration, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn reject(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// Refuses an upgrade and counts it.
fn refuse(server: &ServerInner, status: StatusCode, message: &str) -> Response {
    server
        .shared
        .hooks()
        .metrics()
        .rejected_handshake(status.as_u16());
    reject(status, message)
}

/// Checks the upgrade request; returns the Sec-WebSocket-Accept value and
/// whether the client offered our subprotocol (then the answer names it).
#[allow(clippy::result_large_err)]
fn validate_upgrade(
    headers: &HeaderMap,
    method: &http::Method,
) -> Result<(HeaderValue, bool), Response> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if method != http::Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return Err(reject(
            StatusCode::UPGRADE_REQUIRED,
            "this is a goomerang WebSocket endpoint: send a GET with Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = reject(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; use 13",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(response);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(reject(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    let offered = offered_subprotocols(headers);
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            &format!("unsupported subprotocol(s) {offered:?}; this server speaks {SUBPROTOCOL}"),
        ));
    }
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"))?;
    Ok((accept, !offered.is_empty()))
}

async fn upgrade(AxumState(server): AxumState<Arc<ServerInner>>, mut req: Request) -> Response {
    if server.state.get() != State::Running {
        return refuse(
            &server,
            StatusCode::SERVICE_UNAVAILABLE,
            "server is not accepting connections (shutting down)",
        );
    }
    let (accept, name_protocol) = match validate_upgrade(req.headers(), req.method()) {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    if let Some(origins) = &server.origins {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !origins.allows(origin) {
            return refuse(
                &server,
                StatusCode::FORBIDDEN,
                &format!("origin {} is not allowed", origin.unwrap_or("")),
            );
        }
    }
    // Taken here, before `on_open` awaits; given back when the connection has
    // ended, or at once if the upgrade is refused from here on.
    if !server.admission.try_acquire() {
        return refuse(
            &server,
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit",
        );
    }
    let slot = Slot::taken(&server.admission);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let state = match &server.on_open {
        None => http::Extensions::new(),
        Some(on_open) => {
            let handshake = Handshake {
                uri: req.uri().clone(),
                headers: req.headers().clone(),
                peer_addr: peer,
                subprotocols: offered_subprotocols(req.headers())
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            };
            match on_open(handshake).await {
                Ok(accepted) => accepted.state,
                Err(refused) => return refuse(&server, refused.status, &refused.reason),
            }
        }
    };
    // A session to resume (PROTOCOL.md, Sessions): header, or query for browsers.
    let presented = req
        .headers()
        .get("goomerang-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let query = req.uri().query()?;
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "goomerang_session")
                .map(|(_, value)| value.into_owned())
        });
    let resumed = match presented {
        Some(key) => Some(resume_session(&server, key).await),
        None => None,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(&server.shared);
    let conn = Connection::new(id, peer, Arc::clone(shared.core()), state);
    match resumed {
        Some(Some((key, data))) => {
            conn.restore_session(key.clone(), data);
            conn.announce_session(&key);
        }
        // Unknown or expired: the client forgets its key.
        Some(None) => conn.announce_session(""),
        None => {}
    }
    server.hub.register(&conn);
    let registry = Arc::clone(&server.hub);
    let tracker = shared.connections().clone();
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Plain TCP comes out as itself, with what hyper read past
                // the request, out of hyper's own wrapping.
                let (io, leftover): (Io, _) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                    // Copied: the bytes are a slice of hyper's whole read
                    // buffer, which an idle connection should not keep.
                    Ok(parts) => (
                        Box::new(parts.io.into_inner()),
                        BytesMut::from(&parts.read_buf[..]),
                    ),
                    Err(upgraded) => (Box::new(TokioIo::new(upgraded)), BytesMut::new()),
                };
                let ws = Upgraded {
                    io,
                    leftover,
                    role: Role::Server,
                };
                driver::run(ws, conn.clone(), shared).await;
            }
            Err(err) => tracing::debug!(conn = id, error = %err, "upgrade did not complete"),
        }
        registry.unregister(id);
        drop(slot);
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if name_protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    response
}

/// Looks a presented session key up in the store, and renews its lifetime;
/// `None` if it is unknown, expired, or the store failed (reported).
async fn resume_session(server: &ServerInner, key: String) -> Option<(String, SessionData)> {
    let sessions = server.shared.core().sessions()?;
    let found = match sessions.store.load(&key).await {
        Ok(found) => found?,
        Err(err) => {
            server.shared.hooks().error(&Incident::Session(err), None);
            return None;
        }
    };
    if let Err(err) = sessions.store.save(&key, found.clone(), sessions.ttl).await {
        server.shared.hooks().error(&Incident::Session(err), None);
    }
    Some((key, found))
}

/// What the server does with an upgrade request's parts before any I/O, for
/// the handshake fuzz target: validation, the offered subprotocols, the query.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_upgrade(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) {
    let _ = validate_upgrade(headers, method);
    let subprotocols: Vec<String> = offered_subprotocols(headers)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let handshake = Handshake {
        uri: uri.clone(),
        headers: headers.clone(),
        peer_addr: None,
        subprotocols,
    };
    let _ = handshake.query("token");
    let _ = handshake.header("authorization");
}
