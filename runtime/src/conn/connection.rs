//! `Connection`: the handle to one live WebSocket peer — send, request, close — and its bookkeeping.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// What a connection's reader still has to wait for (room in the queue, a
/// free handler slot): boxed, so that the reader's own state stays small.
pub(crate) type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

use crate::incident::Incident;
use crate::sync::{lock, sleep_until};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::calls::Calls;
use crate::conn::close::{CloseInfo, CloseState};
use crate::conn::core::Core;
use crate::conn::outbox::{Outbound, Outbox, Refused};
use crate::conn::session::{SessionData, SessionStoreError, new_key};
use crate::conn::writer::Writer;
use crate::error::Error;
use crate::wire::frame::{self, Head, Incoming, Reply};
use crate::wire::message::{Headers, IntoMessage, Metadata, Payload, Response, TypeName};
use crate::wire::proto::{self, Frame, FrameKind};
use crate::wire::reply::Outcome;
use crate::wire::status::Status;
use crate::wire::topic::{Position, Subscription};

/// A request's connection (its address: ids are per server and per client,
/// so two can share one), the task that started it (none outside a task, as
/// in `block_on`) and its id.
type Started = (usize, Option<tokio::task::Id>, u64);

thread_local! {
    /// The last request started on this thread: a request of the same task
    /// and connection still waiting makes the next one part of a burst (see
    /// `writer.rs`). A task that moved to another thread meanwhile is not
    /// recognised, and writes its request itself, as a lone one does; a
    /// wrong match (a new connection at a freed one's address) only has a
    /// request written by the writer task instead of its caller.
    static LAST_REQUEST: std::cell::Cell<Option<Started>> = const { std::cell::Cell::new(None) };
}

/// A live connection to one peer. Cheap to clone; every clone is the same connection.
///
/// On the server each client is one `Connection` (see `Context::connection`,
/// `Server::connections`); on the client it is the link to the server.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    peer_addr: Option<SocketAddr>,
    core: Arc<Core>,
    /// The queue to the socket and its writer. Frames are bounded by the
    /// queue's byte budget, except CANCEL frames, which are bounded by the
    /// requests this side made.
    writer: Writer,
    /// Requests in flight both ways.
    calls: Calls,
    /// Closing and closed: tokens, flags and how it ended.
    close: CloseState,
    /// What the server's `on_open` hook attached (empty on clients).
    state: http::Extensions,
    /// What handlers store on the connection as the session goes on.
    data: Mutex<http::Extensions>,
    /// The session (key and content) this connection has, on a server.
    session: Mutex<Option<(String, SessionData)>>,
    /// The runtime the connection was made on, where its deadline sweeper
    /// runs (a request may come from another runtime).
    runtime: Option<tokio::runtime::Handle>,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer_addr: Option<SocketAddr>,
        core: Arc<Core>,
        state: http::Extensions,
    ) -> Connection {
        let outbox = Outbox::new(
            core.config().outbound_queue_bytes,
            Arc::clone(core.metrics()),
        );
        let writer = Writer::new(outbox, Arc::clone(core.metrics()));
        let inner = Inner {
            id,
            peer_addr,
            core,
            writer,
            calls: Calls::default(),
            close: CloseState::default(),
            state,
            session: Mutex::new(None),
            runtime: tokio::runtime::Handle::try_current().ok(),
            data: Mutex::new(http::Extensions::new()),
        };
        Connection {
            inner: Arc::new(inner),
        }
    }

    /// Whether `other` is a handle on this same connection.
    pub(crate) fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// This connection's id, unique within its server (or client) for the process lifetime.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's socket address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr
    }

    /// State the server's [`on_open`](crate::ServerBuilder::on_open) hook
    /// attached with [`Accept::with`](crate::Accept::with), e.g. the
    /// authenticated identity. `None` if nothing of type `T` was attached.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.state.get::<T>()
    }

    /// Stores a value on the connection for later messages to read with
    /// [`data`](Self::data) (the room a client joined, a negotiated
    /// preference): state that changes after the handshake, unlike
    /// [`state`](Self::state). One value per type; replaces and returns the
    /// previous one. Dropped with the connection.
    pub fn set_data<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        lock(&self.inner.data).insert(value)
    }

    /// A copy of the value of type `T` stored with [`set_data`](Self::set_data).
    pub fn data<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.inner.data).get::<T>().cloned()
    }

    /// Changes the value of type `T` in place (inserting `T::default()`
    /// first if there is none) and returns what `change` returns; atomic with
    /// respect to other calls on this connection.
    pub fn update_data<T, R>(&self, change: impl FnOnce(&mut T) -> R) -> R
    where
        T: Clone + Default + Send + Sync + 'static,
    {
        change(lock(&self.inner.data).get_or_insert_default::<T>())
    }

    /// Removes and returns the value of type `T`.
    pub fn remove_data<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.inner.data).remove::<T>()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.close.is_closed()
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.inner.close.info()
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) {
        self.inner.close.closed().await;
    }

    /// Sends a one-way message. Returns once the frame is queued for the
    /// writer; waits while the outbound queue is full.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] if the connection ended or is closing,
    /// [`Error::MessageTooLarge`] if the frame exceeds the size limit.
    pub async fn send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        self.send_method("", message).await
    }

    /// Sends a one-way message to method `method` (`package.Service/Method`,
    /// routed by method on the peer), as generated stubs do; `""` routes by type
    /// like [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_method<T: Payload>(
        &self,
        method: &str,
        message: impl IntoMessage<T>,
    ) -> Result<(), Error> {
        let bytes = frame::encode_message(FrameKind::Message, "", method, message.into_message());
        self.enqueue(bytes).await
    }

    /// Like [`send`](Self::send) but fails with [`Error::QueueFull`] instead of
    /// waiting when the outbound queue is full.
    pub fn try_send<T: Payload>(&self, message: impl IntoMessage<T>) -> Result<(), Error> {
        let bytes = frame::encode_message(FrameKind::Message, "", "", message.into_message());
        self.try_enqueue(bytes)
    }

    /// Sends a request and waits for its reply, up to the message's timeout
    /// (or the configured default). Many requests may be in flight at once.
    ///
    /// Dropping the returned future, or reaching the deadline, sends CANCEL to
    /// the peer, whose handler is then cancelled.
    ///
    /// # Errors
    /// The peer's status if its handler failed (UNIMPLEMENTED if it has no
    /// handler); DEADLINE_EXCEEDED if no reply came in time; UNAVAILABLE if the
    /// connection ended or this side is shutting down; INTERNAL if the reply
    /// is not a `Resp`.
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> Result<Response<Resp>, Status> {
        self.request_method("", message).await
    }

    /// Sends a request to method `method` (`package.Service/Method`, routed
    /// by method on the peer) and awaits the reply, as generated stubs do;
    /// `""` routes by type like [`request`](Self::request).
    ///
    /// # Errors
    /// As [`request`](Self::request); UNIMPLEMENTED if the peer has no
    /// handler for `method`, INVALID_ARGUMENT if `Req` is not its input type.
    pub async fn request_method<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<Req>,
    ) -> Result<Response<Resp>, Status> {
        let (payload, headers, timeout) = message.into_message().into_parts();
        let timeout = timeout.unwrap_or(self.inner.core.config().request_timeout);
        let type_name = TypeName::of::<Req>();
        let head = Head {
            method,
            ..Head::new(FrameKind::Request, type_name, &headers)
        };
        let started = Instant::now();
        let reply = self.call(head, &payload, started + timeout, timeout).await;
        self.inner
            .core
            .metrics()
            .request_took(type_name, method, started.elapsed());
        decode_reply(reply?)
    }

    /// Sends an acknowledged SUBSCRIBE or UNSUBSCRIBE and waits for its REPLY/ERROR.
    /// Sends a SUBSCRIBE (with the position to recover from, if any) or an
    /// UNSUBSCRIBE and waits for the acknowledgement; a topic with history
    /// answers with where it stands (a `goomerang.v1.Position`).
    pub(crate) async fn control(
        &self,
        kind: FrameKind,
        sub: &Subscription,
        from: Option<&Position>,
    ) -> Result<Option<proto::Position>, Status> {
        let timeout = self.inner.core.config().request_timeout;
        let headers = Headers::new();
        let head = Head {
            topic: &sub.pattern,
            queue_group: sub.group.as_deref().unwrap_or(""),
            offset: from.map_or(0, |p| p.offset),
            epoch: from.map_or("", |p| p.epoch.as_str()),
            ..Head::new(kind, TypeName::NONE, &headers)
        };
        let reply = self
            .call(head, &(), Instant::now() + timeout, timeout)
            .await?;
        if reply.type_name.as_str() != "goomerang.v1.Position" {
            return Ok(None);
        }
        proto::Position::decode(reply.payload)
            .map(Some)
            .map_err(|err| Status::internal(format!("a Position that does not decode: {err}")))
    }

    /// Sends `head` (kind, type, headers, topic as given) with a fresh id and
    /// `payload`, and waits for the answer with that id until `deadline`
    /// (`timeout` from when the caller started).
    async fn call<P: prost::Message>(
        &self,
        mut head: Head<'_>,
        payload: &P,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Reply, Status> {
        if self.inner.core.is_shutting_down() {
            return Err(Error::ShuttingDown.into());
        }
        // Part of a burst when this task's last request here still waits.
        let (conn, task) = (Arc::as_ptr(&self.inner) as usize, tokio::task::try_id());
        let follows = LAST_REQUEST.get().and_then(|(last_conn, last_task, last)| {
            (last_conn == conn && last_task == task).then_some(last)
        });
        let (id, rx, burst, first) = self.inner.calls.start(follows, deadline);
        LAST_REQUEST.set(Some((conn, task, id)));
        if let Some(rearm) = first {
            self.start_sweeper(rearm);
        }
        let mut guard = PendingGuard {
            conn: self,
            id,
            sent: false,
            done: false,
        };
        if self.is_closed() {
            return Err(self.closed_error().into());
        }
        head.id = id;
        head.timeout_ms = frame::timeout_ms(timeout);
        let bytes = head.encode(payload);
        let what = || match head.kind {
            FrameKind::Request if !head.method.is_empty() => {
                format!("request {id} ({})", head.method)
            }
            FrameKind::Request => format!("request {id} ({})", head.type_name),
            kind => format!("{} {id} ({:?})", kind.as_str_name(), head.topic),
        };
        let queued = match self.try_write_now(bytes, burst) {
            Ok(result) => Ok(result),
            // Boxed: a full queue is rare, and its wait stays out of every request's future.
            Err(bytes) => Box::pin(tokio::time::timeout_at(deadline, self.enqueue(bytes))).await,
        };
        match queued {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "{} could not be queued within {timeout:?}: outbound queue full",
                    what()
                )));
            }
            Ok(Err(err)) => return Err(err.into()),
            Ok(Ok(())) => guard.sent = true,
        }
        // No timer of its own: the connection's sweeper ends the wait at the
        // deadline (see `sweep`).
        let waited = rx.await;
        guard.done = true;
        match waited {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                // The peer is told to stop working on it.
                guard.cancel();
                Err(Status::deadline_exceeded(format!(
                    "no reply to {} within {timeout:?}",
                    what()
                )))
            }
            Err(_) => Err(self.closed_error().into()),
        }
    }

    /// Starts the task that ends the wait of this connection's requests at
    /// their deadlines, on the runtime the connection runs on.
    fn start_sweeper(&self, rearm: Arc<tokio::sync::Notify>) {
        let sweep = sweep(self.clone(), rearm);
        match &self.inner.runtime {
            Some(runtime) => drop(runtime.spawn(sweep)),
            None => drop(tokio::spawn(sweep)),
        }
    }

    /// Closes the connection with code 1000 and waits until it has ended
    /// (bounded by the configured close timeout).
    pub async fn close(&self) {
        self.start_close(1000, "normal closure");
        self.closed().await;
    }

    /// Closes the connection with `code` and `reason` (truncated to the 123
    /// bytes RFC 6455 allows) and waits until it has ended: how a handler ends
    /// its own connection (`ctx.connection().close_with(4001, "kicked")`). The
    /// peer sees the code and reason; requests still running on this
    /// connection, the caller's own included, are cancelled as it ends.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`] for a code an endpoint may not send: only
    /// 1000–1003, 1007–1014 and 3000–4999 may be sent.
    pub async fn close_with(&self, code: u16, reason: &str) -> Result<(), Error> {
        if !sendable_close_code(code) {
            return Err(Error::InvalidCloseCode(code));
        }
        self.start_close(code, reason);
        self.closed().await;
        Ok(())
    }

    /// Gives this connection a session holding `value` (a login's user, say):
    /// saved in the server's session store under a new random key, which
    /// the client is sent and presents when it reconnects (to any replica
    /// sharing the store). Replaces a session it had. Returns the key.
    ///
    /// # Errors
    /// [`Error::Session`] if the store failed, or on a client's connection
    /// (sessions are the server's).
    pub async fn create_session<T: Payload>(&self, value: &T) -> Result<String, Error> {
        let sessions = self.inner.core.sessions().ok_or_else(|| {
            Error::Session(SessionStoreError::new(
                "sessions are created by the server, not by clients",
            ))
        })?;
        let data = SessionData::new(
            TypeName::of::<T>().to_string(),
            Bytes::from(value.encode_to_vec()),
        );
        let key = new_key();
        sessions
            .store
            .save(&key, data.clone(), sessions.ttl)
            .await
            .map_err(Error::Session)?;
        let old = lock(&self.inner.session).replace((key.clone(), data));
        if let Some((old_key, _)) = old {
            let _ = sessions.store.remove(&old_key).await;
        }
        self.announce_session(&key);
        Ok(key)
    }

    /// Ends this connection's session: removed from the store, and the
    /// client told to forget its key. Nothing if it has none.
    ///
    /// # Errors
    /// [`Error::Session`] if the store failed.
    pub async fn end_session(&self) -> Result<(), Error> {
        let Some((key, _)) = lock(&self.inner.session).take() else {
            return Ok(());
        };
        if let Some(sessions) = self.inner.core.sessions() {
            sessions.store.remove(&key).await.map_err(Error::Session)?;
        }
        self.announce_session("");
        Ok(())
    }

    /// The session's content, if this connection has one holding a `T`.
    pub fn session<T: Payload + Default>(&self) -> Option<T> {
        let session = lock(&self.inner.session);
        let (_, data) = session.as_ref()?;
        if data.type_name() != TypeName::of::<T>().to_string() {
            return None;
        }
        T::decode(data.payload().clone()).ok()
    }

    /// The session's key, if this connection has one.
    pub fn session_key(&self) -> Option<String> {
        lock(&self.inner.session)
            .as_ref()
            .map(|(key, _)| key.clone())
    }

    /// Attaches a session found in the store (when the client presented its key).
    pub(crate) fn restore_session(&self, key: String, data: SessionData) {
        *lock(&self.inner.session) = Some((key, data));
    }

    /// Tells the client its session key (empty: it has none), ahead of
    /// anything queued after it.
    pub(crate) fn announce_session(&self, key: &str) {
        let headers = Headers::new();
        let frame = Head::new(
            FrameKind::Message,
            TypeName::of::<proto::Session>(),
            &headers,
        )
        .encode(&proto::Session {
            key: key.to_owned(),
        });
        // Outside the byte budget (0 permits): a full queue must not lose it.
        let _ = self.outbox().try_push(frame, 0);
    }

    /// Starts a close handshake with `code` and `reason` (truncated to the
    /// 123 bytes RFC 6455 allows); later calls do nothing. Sends fail from now on.
    pub(crate) fn start_close(&self, code: u16, reason: &str) {
        self.inner.close.begin(code, reason, |code, reason| {
            self.outbox().push_control(Outbound::Close { code, reason });
        });
    }

    /// Drops the connection at once (no close handshake), recording `code`
    /// and `reason` as a local close: for slow consumers and dead peers.
    pub(crate) fn abort(&self, code: u16, reason: &str) {
        self.inner.close.record(code, reason);
        self.kill();
    }

    /// Drops the connection at once, recording nothing (see [`abort`](Self::abort)).
    /// The queue closes too: whoever waits for room in it (the reader
    /// answering a frame, a sender) stops waiting, so a peer that never reads
    /// cannot hold the connection's tasks once it is killed.
    pub(crate) fn kill(&self) {
        self.inner.close.kill();
        self.outbox().close();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.inner.close.is_killed()
    }

    /// Whether this side started a close handshake.
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.close.is_closing()
    }

    /// The code and reason this side closed (or dropped) the connection with.
    pub(crate) fn local_close(&self) -> Option<(u16, String)> {
        self.inner.close.local()
    }

    fn check_sendable(&self, bytes: &Bytes) -> Result<(), Error> {
        let max = self.inner.core.config().max_message_size;
        if bytes.len() > max {
            return Err(Error::MessageTooLarge {
                size: bytes.len(),
                max,
            });
        }
        if self.is_closed() || self.is_closing() {
            return Err(self.closed_error());
        }
        Ok(())
    }

    /// Queues an encoded frame, waiting for room in the byte budget. The
    /// wait is boxed: room at once is the common case, and a send's future,
    /// moved (copied) at each `.await` on its way down, stays small.
    pub(crate) async fn enqueue(&self, bytes: Bytes) -> Result<(), Error> {
        self.check_sendable(&bytes)?;
        let permits = self.outbox().permits_for(bytes.len());
        let bytes = match self.outbox().try_push(bytes, permits) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed(_)) => return Err(self.closed_error()),
            Err(Refused::Full(bytes)) => bytes,
        };
        Box::pin(self.outbox().push(bytes, permits))
            .await
            .map_err(|_| self.closed_error())
    }

    /// Queues a frame whose sender waits for the answer anyway (a request),
    /// writing it from the calling task when the writer is idle instead of
    /// waking the writer; one of a `burst` is only queued, for the writer
    /// task to write with the rest. Hands the frame back when the queue is full.
    fn try_write_now(&self, bytes: Bytes, burst: bool) -> Result<Result<(), Error>, Bytes> {
        if let Err(err) = self.check_sendable(&bytes) {
            return Ok(Err(err));
        }
        let permits = self.outbox().permits_for(bytes.len());
        if burst {
            return match self.outbox().try_push(bytes, permits) {
                Ok(()) => Ok(Ok(())),
                Err(Refused::Closed(_)) => Ok(Err(self.closed_error())),
                Err(Refused::Full(bytes)) => Err(bytes),
            };
        }
        let waker = futures_util::task::noop_waker();
        // A no-op waker: a write that cannot finish at once is handed to the
        // writer task, which registers its own.
        let mut cx = std::task::Context::from_waker(&waker);
        match self.inner.writer.push_and_write(bytes, permits, &mut cx) {
            Ok(()) => Ok(Ok(())),
            Err(Refused::Closed(_)) => Ok(Err(self.closed_error())),
            Err(Refused::Full(bytes)) => Err(bytes),
        }
    }

    pub(crate) fn try_enqueue(&self, bytes: Bytes) -> Result<(), Error> {
        self.try_enqueue_or_return(bytes).map_err(|(err, _)| err)
    }

    /// [`try_enqueue`](Self::try_enqueue) that hands the frame back on failure,
    /// so a full queue can be waited on elsewhere.
    fn try_enqueue_or_return(&self, bytes: Bytes) -> Result<(), (Error, Bytes)> {
        if let Err(err) = self.check_sendable(&bytes) {
            return Err((err, bytes));
        }
        let permits = self.outbox().permits_for(bytes.len());
        match self.outbox().try_push(bytes, permits) {
            Ok(()) => Ok(()),
            Err(Refused::Full(bytes)) => Err((Error::QueueFull, bytes)),
            Err(Refused::Closed(bytes)) => Err((self.closed_error(), bytes)),
        }
    }

    /// Answers the peer's ping (a pong still queued answers this one instead).
    pub(crate) fn pong(&self, payload: Bytes) {
        self.outbox().push_pong(payload);
    }

    /// Answers the peer's close frame with the same `code` and `reason`
    /// (RFC 6455 §5.5.1), without starting a close of this side's own.
    pub(crate) fn answer_close(&self, code: u16, reason: &str) {
        self.outbox().push_control(Outbound::Close {
            code,
            reason: reason.to_owned(),
        });
    }

    /// Queues a keepalive ping.
    pub(crate) fn ping(&self) {
        self.outbox().push_control(Outbound::Ping);
    }

    pub(crate) fn closed_error(&self) -> Error {
        self.inner.close.error()
    }

    /// Sends the answer to the peer's request `id`, waiting for room in the queue.
    pub(crate) async fn reply(&self, id: u64, outcome: Outcome) {
        let bytes = self.reply_frame(id, outcome);
        if let Err(err) = self.enqueue(bytes).await {
            tracing::debug!(conn = self.id(), id, %err, "reply not sent");
        }
    }

    /// Answers the peer's request `id` at once when the queue has room (the
    /// usual case); otherwise returns the wait for room, boxed, for the
    /// reader to await without carrying its state while idle.
    pub(crate) fn answer_now(&self, id: u64, outcome: Outcome) -> Option<Wait<'_>> {
        let bytes = self.try_reply(id, outcome)?;
        Some(self.wait_for_room(bytes))
    }

    /// Tells the peer a one-way frame it sent (of `type_name`, to `method`)
    /// could not be handled: ERROR with id 0, naming the frame. As
    /// [`answer_now`](Self::answer_now): at once, or the wait for room.
    pub(crate) fn report_now(
        &self,
        status: &Status,
        type_name: &str,
        method: &str,
    ) -> Option<Wait<'_>> {
        match self.try_enqueue_or_return(report_frame(status, type_name, method)) {
            Err((Error::QueueFull, bytes)) => Some(self.wait_for_room(bytes)),
            _ => None,
        }
    }

    /// Queues `bytes` once the queue has room.
    fn wait_for_room(&self, bytes: Bytes) -> Wait<'_> {
        Box::pin(async move {
            if let Err(err) = self.enqueue(bytes).await {
                tracing::debug!(conn = self.id(), %err, "answer not sent");
            }
        })
    }

    /// Queues the answer to the peer's request `id` if the queue has room now;
    /// otherwise hands it back so the caller can wait elsewhere.
    pub(crate) fn try_reply(&self, id: u64, outcome: Outcome) -> Option<Bytes> {
        match self.try_enqueue_or_return(self.reply_frame(id, outcome)) {
            Err((Error::QueueFull, bytes)) => Some(bytes),
            Err((err, _)) => {
                tracing::debug!(conn = self.id(), id, %err, "reply not sent");
                None
            }
            Ok(()) => None,
        }
    }

    /// The REPLY or ERROR frame answering request `id`. A reply too large to
    /// send becomes a RESOURCE_EXHAUSTED error so the requester is never left waiting.
    fn reply_frame(&self, id: u64, outcome: Outcome) -> Bytes {
        let bytes = match outcome {
            Ok(Some(reply)) => Head {
                id,
                ..Head::new(FrameKind::Reply, reply.type_name, &reply.headers)
            }
            .encode_bytes(&reply.payload),
            Ok(None) => error_frame(id, &Status::internal("handler produced no reply")),
            Err(status) => error_frame(id, &status),
        };
        let max = self.inner.core.config().max_message_size;
        if bytes.len() > max {
            let status = Status::resource_exhausted(format!(
                "reply of {} bytes exceeds the {max} byte message limit",
                bytes.len()
            ));
            return error_frame(id, &status);
        }
        bytes
    }

    /// [`report_now`](Self::report_now) without waiting: a report
    /// that finds the queue full is dropped (and logged).
    pub(crate) fn queue_report(&self, status: &Status, type_name: &str, method: &str) {
        if let Err(err) = self.try_enqueue(report_frame(status, type_name, method)) {
            tracing::debug!(conn = self.id(), %err, "one-way failure not reported to the peer");
        }
    }

    /// Routes a REPLY or ERROR frame to the request waiting for it.
    pub(crate) fn complete(&self, frame: &mut Incoming) -> Result<(), Incident> {
        let is_error = frame.kind == FrameKind::Error as i32;
        if is_error && frame.id == 0 {
            return Err(Incident::Remote {
                type_name: frame.type_name.to_string(),
                method: frame.method.to_string(),
                status: Status::from_wire(frame.status.take()),
            });
        }
        let id = frame.id;
        let answer = if is_error {
            Err(Status::from_wire(frame.status.take()))
        } else {
            Ok(Reply::take(frame))
        };
        if self.inner.calls.answer(id, answer) {
            Ok(())
        } else {
            Err(Incident::UnknownReply(id))
        }
    }

    /// Records a running request handler and returns its registration's
    /// number; `None` if a request with this id is already in flight.
    pub(crate) fn register_inflight(&self, id: u64) -> Option<u64> {
        self.inner.calls.register(id)
    }

    /// The cancellation token of the peer's request `id` (registration
    /// `seq`), made on first need; `None` once it left the in-flight table.
    pub(crate) fn inflight_token(&self, id: u64, seq: u64) -> Option<CancellationToken> {
        self.inner.calls.token(id, seq)
    }

    /// Whether the peer's request `id` (registration `seq`) is still in flight.
    pub(crate) fn is_inflight(&self, id: u64, seq: u64) -> bool {
        self.inner.calls.is_registered(id, seq)
    }

    /// Takes request `id` (registration `seq`) off the in-flight table; false
    /// if it is no longer there (the peer cancelled it, or the connection ended).
    pub(crate) fn remove_inflight(&self, id: u64, seq: u64) -> bool {
        self.inner.calls.unregister(id, seq)
    }

    /// Handles CANCEL: cancels the handler for the peer's request `id`, if still running.
    pub(crate) fn cancel_inflight(&self, id: u64) {
        self.inner.calls.cancel(id);
    }

    /// Gives up on every request of the peer still being handled: each handler
    /// is cancelled and its caller answered `status` now (queued outside the
    /// byte budget, so the answer goes out before the close that follows). A
    /// handler finishing later sends nothing: the id is no longer in flight.
    pub(crate) fn abandon_inflight(&self, status: &Status) {
        for id in self.inner.calls.cancel_all() {
            let _ = self.outbox().try_push(error_frame(id, status), 0);
        }
    }

    /// Marks the connection ended: fails every waiting request, cancels request handlers.
    pub(crate) fn finish(&self, info: CloseInfo) {
        self.inner.close.finish(info);
        self.outbox().close();
        let status: Status = self.closed_error().into();
        self.inner.calls.fail_all(|| {
            Status::new(
                status.code(),
                format!("{} before the reply arrived", status.message()),
            )
        });
        self.inner.calls.cancel_all();
    }

    pub(crate) fn config(&self) -> &crate::Config {
        self.inner.core.config()
    }

    /// The queue to the socket.
    fn outbox(&self) -> &Outbox {
        self.inner.writer.outbox()
    }

    /// The socket's writer (the driver attaches the write half to it).
    pub(crate) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// The owner's counters, which this connection's traffic counts in.
    pub(crate) fn metrics(&self) -> &crate::observe::metrics::Counters {
        self.inner.core.metrics()
    }

    /// Cancelled when the owner's shutdown deadline passes (one-way work stops then).
    pub(crate) fn owner_abort(&self) -> &CancellationToken {
        self.inner.core.abort()
    }

    /// Cancelled when the connection is dropped at once.
    pub(crate) fn kill_token(&self) -> &CancellationToken {
        self.inner.close.kill_token()
    }

    /// For the reader: ready once the connection is killed or (unless
    /// `closing_seen`) this side began closing; else wakes the reader then.
    pub(crate) fn poll_stop(
        &self,
        closing_seen: bool,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.inner.close.poll_stop(closing_seen, cx)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer_addr", &self.inner.peer_addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Removes a request from `pending` however `call` ends, and sends CANCEL if
/// the request went out and no answer came (timeout, or the caller dropped the future).
struct PendingGuard<'a> {
    conn: &'a Connection,
    id: u64,
    sent: bool,
    done: bool,
}

impl PendingGuard<'_> {
    /// Sends CANCEL for the request, if it went out and the connection is open.
    fn cancel(&self) {
        if self.sent && !self.conn.is_closed() {
            let cancel = frame::encode(&Frame {
                kind: FrameKind::Cancel as i32,
                id: self.id,
                ..Frame::default()
            });
            // Outside the byte budget: bounded by this side's own requests, and it must not be lost.
            let _ = self.conn.outbox().try_push(cancel, 0);
        }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.done && self.conn.inner.calls.forget(self.id) {
            self.cancel();
        }
    }
}

/// Ends the wait of `conn`'s requests at their deadlines, until the
/// connection ends: one timer for all of them, asleep until the earliest (a
/// request with an earlier one wakes it), instead of one per request.
async fn sweep(conn: Connection, rearm: Arc<tokio::sync::Notify>) {
    let calls = &conn.inner.calls;
    loop {
        let next = calls.arm();
        tokio::select! {
            biased;
            () = conn.closed() => return,
            () = rearm.notified() => {}
            () = sleep_until(next) => {
                calls.expire(Instant::now());
            }
        }
    }
}

/// ERROR with id 0 reporting a one-way frame of `type_name` sent to `method`.
fn report_frame(status: &Status, type_name: &str, method: &str) -> Bytes {
    frame::encode(&Frame {
        kind: FrameKind::Error as i32,
        r#type: type_name.to_owned(),
        method: method.to_owned(),
        status: Some(status.to_wire()),
        ..Frame::default()
    })
}

/// Whether an endpoint may send `code` in a close frame (RFC 6455 §7.4).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn error_frame(id: u64, status: &Status) -> Bytes {
    frame::encode(&Frame {
        kind: FrameKind::Error as i32,
        id,
        status: Some(status.to_wire()),
        ..Frame::default()
    })
}

fn decode_reply<Resp: Payload>(reply: Reply) -> Result<Response<Resp>, Status> {
    let expected = TypeName::of::<Resp>();
    if !expected.is(&reply.type_name) {
        return Err(Status::internal(format!(
            "expected a reply of type {expected}, the peer sent {:?}",
            reply.type_name.as_str()
        )));
    }
    let size = reply.payload.len();
    let payload = Resp::decode(reply.payload)
        .map_err(|err| Status::internal(format!("reply does not decode as {expected}: {err}")))?;
    Ok(Response {
        payload,
        headers: reply.headers,
        metadata: Metadata {
            type_name: reply.type_name,
            size,
            id: reply.id,
            created_unix_us: reply.created_unix_us,
            topic: None,
            method: Default::default(),
            position: None,
        },
    })
}
