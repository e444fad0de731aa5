//! `Client`: connects to a goomerang server, runs the connection driver, and closes gracefully.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::HeaderValue;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, tungstenite};

use crate::config::Config;
use crate::connection::{Connection, lock};
use crate::driver;
use crate::error::Error;
use crate::frame::SUBPROTOCOL;
use crate::hooks::{Hooks, hook_methods};
use crate::message::{IntoMessage, Payload, Response};
use crate::router::{Router, routing_methods};
use crate::shared::{Shared, Side};
use crate::state::{State, StateCell};
use crate::status::Status;

/// Builds a [`Client`]: handlers (for server → client messages and requests),
/// middleware, hooks and limits.
#[derive(Debug)]
pub struct ClientBuilder {
    router: Router,
    config: Config,
    hooks: Hooks,
}

impl ClientBuilder {
    routing_methods!();
    hook_methods!();

    /// Finishes the client (state NEW); connect it with [`Client::connect`].
    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                shared: Shared::new(Side::Client, self.router.finish(), self.config, self.hooks),
                state: StateCell::new(),
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// Builds the client and connects it to `url` (e.g. `ws://127.0.0.1:8080/ws`).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect(self, url: &str) -> Result<Client, Error> {
        let client = self.build();
        client.connect(url).await?;
        Ok(client)
    }
}

/// A goomerang client. Cheap to clone; clones share the connection.
/// Dropping the last clone closes the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    shared: Arc<Shared>,
    state: StateCell,
    /// The current connection, if any; replaced on every connect.
    conn: Mutex<Option<Connection>>,
    /// Held across a connect so two connects cannot race.
    connecting: tokio::sync::Mutex<()>,
    next_conn: AtomicU64,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(conn) = lock(&self.conn).take() {
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
            hooks: Hooks::default(),
        }
    }

    /// Connects to `url` (NEW or CLOSED → RUNNING), offering the `goomerang.v1` subprotocol.
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
        let mut request = url.into_client_request().map_err(|err| Error::InvalidUrl {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let shared = &self.inner.shared;
        let config = shared.config.websocket();
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .map_err(|err| connect_error(url, err))?;
        let peer = match ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.peer_addr().ok(),
            _ => None,
        };
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (conn, rx) = Connection::new(id, peer, Arc::clone(shared));
        *lock(&self.inner.conn) = Some(conn.clone());
        shared.set_shutting_down(false);
        shared.handlers.reopen();
        shared.connections.reopen();
        self.inner.state.set(State::Running);
        shared.hooks.state(State::Running);
        let owner: Weak<ClientInner> = Arc::downgrade(&self.inner);
        shared.connections.spawn(async move {
            driver::run(ws, conn.clone(), rx).await;
            if let Some(client) = owner.upgrade() {
                // The connection dropped by itself (not through `close`): RUNNING → CLOSED.
                if client
                    .state
                    .transition(State::Running, State::Closed)
                    .is_ok()
                {
                    client.shared.hooks.state(State::Closed);
                }
            }
        });
        Ok(())
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.inner.state.get()
    }

    /// The current connection.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected.
    pub fn connection(&self) -> Result<Connection, Error> {
        lock(&self.inner.conn)
            .as_ref()
            .filter(|conn| !conn.is_closed())
            .cloned()
            .ok_or(Error::NotRunning)
    }

    /// Sends a one-way message to the server; see [`Connection::send`].
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected, else as [`Connection::send`].
    pub async fn send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        self.connection()?.send(message).await
    }

    /// Sends a one-way message without waiting for queue room; see [`Connection::try_send`].
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not connected, else as [`Connection::try_send`].
    pub fn try_send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        self.connection()?.try_send(message)
    }

    /// Sends a request to the server and awaits the reply; see [`Connection::request`].
    ///
    /// # Errors
    /// UNAVAILABLE when not connected, else as [`Connection::request`].
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> Result<Response<Resp>, Status> {
        self.connection()?.request(message).await
    }

    /// Closes gracefully: RUNNING → CLOSING → CLOSED. New requests fail with
    /// UNAVAILABLE, handlers serving the server's requests finish (bounded by
    /// the close timeout), then the connection closes with 1000.
    ///
    /// # Errors
    /// [`Error::NotRunning`] if not connected, [`Error::ShuttingDown`] if already closing.
    pub async fn close(&self) -> Result<(), Error> {
        self.inner
            .state
            .transition(State::Running, State::Closing)
            .map_err(|found| match found {
                State::Closing => Error::ShuttingDown,
                _ => Error::NotRunning,
            })?;
        let shared = &self.inner.shared;
        shared.hooks.state(State::Closing);
        shared.set_shutting_down(true);
        shared.handlers.close();
        let _ = tokio::time::timeout(shared.config.close_timeout, shared.handlers.wait()).await;
        let conn = lock(&self.inner.conn).take();
        if let Some(conn) = conn {
            conn.close().await;
        }
        shared.connections.close();
        shared.connections.wait().await;
        self.inner.state.set(State::Closed);
        shared.hooks.state(State::Closed);
        Ok(())
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
                &lock(&self.inner.conn).as_ref().map(Connection::id),
            )
            .finish()
    }
}
