//! The per-connection driver: a reader that validates and dispatches frames, and a writer that batches.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::connection::{CloseInfo, Connection, Initiator, Outbound};
use crate::context::{Cancel, Context};
use crate::error::Error;
use crate::frame;
use crate::handler::{Encoded, Kind, Route};
use crate::hub::Hub;
use crate::message::Metadata;
use crate::proto::{Frame, FrameKind};
use crate::shared::Side;
use crate::status::Status;
use crate::topics::{self, Subscription};

/// Frames written before one flush, at most; bounds the latency of a huge backlog.
const MAX_BATCH: usize = 512;

/// Runs one connection to its end: spawns the writer, reads until the peer
/// or this side closes, then fails what is waiting and reports the close.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    conn: Connection,
    rx: mpsc::UnboundedReceiver<Outbound>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let mut writer = tokio::spawn(write_loop(sink, rx, conn.clone()));
    let shared = Arc::clone(&conn.inner.shared);
    shared.hooks.connect(&conn);
    let span = tracing::debug_span!(
        "goomerang.connection",
        conn = conn.id(),
        peer = ?conn.peer_addr(),
        side = ?shared.side,
    );
    let info = async {
        let mut dispatcher = Dispatcher::new(&conn);
        read_loop(stream, &conn, &mut dispatcher).await
    }
    .instrument(span)
    .await;
    conn.finish(info.clone());
    // The writer stops on `closed` once its queue holds no more (a close frame
    // goes out first); a writer stuck on a dead socket is cut off, at once if
    // the connection was killed.
    let grace = if conn.is_killed() {
        Duration::ZERO
    } else {
        shared.config.close_timeout
    };
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    tracing::debug!(conn = conn.id(), code = info.code, reason = %info.reason, initiator = ?info.initiator, "connection ended");
    shared.hooks.disconnect(&conn, &info);
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    conn: Connection,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            _ = conn.inner.closed.cancelled() => None,
        };
        let Some(mut item) = first else { break };
        let mut released = 0usize;
        let mut sent_close = false;
        let mut count = 0;
        let result: Result<(), tungstenite::Error> = async {
            loop {
                match item {
                    Outbound::Frame { bytes, permits } => {
                        released += permits as usize;
                        sink.feed(WsMessage::Binary(bytes)).await?;
                    }
                    Outbound::Ping => sink.feed(WsMessage::Ping(Bytes::new())).await?,
                    Outbound::Close { code, reason } => {
                        sent_close = true;
                        let close = CloseFrame {
                            code: code.into(),
                            reason: reason.into(),
                        };
                        sink.feed(WsMessage::Close(Some(close))).await?;
                        break;
                    }
                }
                count += 1;
                if count >= MAX_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => item = next,
                    Err(_) => break,
                }
            }
            sink.flush().await
        }
        .await;
        conn.inner.budget.add_permits(released);
        conn.inner
            .shared
            .hooks
            .metrics
            .queued_bytes
            .fetch_sub(released as i64, Ordering::Relaxed);
        if let Err(err) = result {
            if !conn.is_closed() && !conn.is_closing() {
                conn.inner
                    .shared
                    .hooks
                    .error(&Error::Transport(err), Some(&conn));
            }
            conn.kill();
            break;
        }
        if sent_close {
            break;
        }
    }
}

async fn read_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    conn: &Connection,
    dispatcher: &mut Dispatcher,
) -> CloseInfo
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let close_timeout = conn.config().close_timeout;
    let far = Duration::from_secs(86_400 * 365);
    let close_deadline = tokio::time::sleep(far);
    tokio::pin!(close_deadline);
    let keepalive = conn.config().keepalive;
    let mut last_seen = Instant::now();
    let check = tokio::time::sleep(keepalive.map_or(far, |k| k.interval));
    tokio::pin!(check);
    let mut closing = false;
    let mut remote_close: Option<(u16, String, bool)> = None;
    loop {
        // Atomic checks on every frame: the control futures below are polled
        // (and register wakers, which takes locks) only while the socket is idle.
        if conn.is_killed() {
            break;
        }
        if !closing && conn.is_closing() {
            closing = true;
            close_deadline
                .as_mut()
                .reset(Instant::now() + close_timeout);
        }
        if closing && close_deadline.is_elapsed() {
            break;
        }
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            _ = conn.inner.kill.cancelled() => break,
            _ = conn.inner.closing.cancelled(), if !closing => continue,
            _ = &mut close_deadline, if closing => break,
            _ = &mut check, if keepalive.is_some() => {
                let Some(k) = keepalive else { continue };
                let now = Instant::now();
                let silent = now - last_seen;
                if silent >= k.interval + k.timeout {
                    conn.inner.shared.hooks.error(&Error::KeepaliveTimeout { silent }, Some(conn));
                    conn.abort(1006, "keepalive timeout: the peer stopped answering");
                    break;
                }
                let next_check = if silent >= k.interval {
                    let _ = conn.push(Outbound::Ping);
                    (now + k.interval).min(last_seen + k.interval + k.timeout)
                } else {
                    last_seen + k.interval
                };
                check.as_mut().reset(next_check);
                continue;
            }
        };
        if keepalive.is_some() {
            last_seen = Instant::now();
        }
        let message = match next {
            None => break,
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                on_read_error(conn, err, closing);
                break;
            }
        };
        match message {
            WsMessage::Binary(bytes) => {
                if conn.is_closing() {
                    continue; // closing: the peer's data can no longer be answered
                }
                if let Err((code, detail)) = handle_binary(conn, dispatcher, bytes).await {
                    violation(conn, code, detail);
                }
            }
            WsMessage::Text(_) => violation(
                conn,
                1003,
                "text frames are not part of the goomerang protocol; send binary Frame messages"
                    .into(),
            ),
            WsMessage::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                let we_started = conn.local_close().is_some();
                remote_close = Some((code, reason, we_started));
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
        }
    }
    match (remote_close, conn.local_close()) {
        (Some((_, _, true)), Some((code, reason))) | (None, Some((code, reason))) => CloseInfo {
            code,
            reason,
            initiator: Initiator::Local,
        },
        (Some((code, reason, _)), _) => CloseInfo {
            code,
            reason,
            initiator: Initiator::Remote,
        },
        (None, None) => CloseInfo {
            code: 1006,
            reason: "connection lost without a close frame".into(),
            initiator: Initiator::Lost,
        },
    }
}

fn on_read_error(conn: &Connection, err: tungstenite::Error, closing: bool) {
    use tungstenite::Error as E;
    match err {
        E::ConnectionClosed | E::AlreadyClosed => {}
        E::Capacity(detail) => {
            let max = conn.config().max_message_size;
            violation(
                conn,
                1009,
                format!("message exceeds the {max} byte limit ({detail})"),
            );
        }
        other if closing => {
            tracing::debug!(conn = conn.id(), error = %other, "read error while closing")
        }
        other => conn
            .inner
            .shared
            .hooks
            .error(&Error::Transport(other), Some(conn)),
    }
}

/// Reports a protocol violation and closes the connection with `code`.
fn violation(conn: &Connection, code: u16, detail: String) {
    conn.inner.shared.hooks.error(
        &Error::Protocol {
            close_code: code,
            detail: detail.clone(),
        },
        Some(conn),
    );
    conn.start_close(code, &detail);
}

/// Validates one binary message and acts on it. An `Err` is a protocol
/// violation: the close code and what the peer did.
async fn handle_binary(
    conn: &Connection,
    dispatcher: &mut Dispatcher,
    bytes: Bytes,
) -> Result<(), (u16, String)> {
    let metrics = &conn.inner.shared.hooks.metrics;
    metrics.received_frames.fetch_add(1, Ordering::Relaxed);
    metrics
        .received_bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let frame = Frame::decode(bytes).map_err(|err| (1007, format!("undecodable frame: {err}")))?;
    let kind = FrameKind::try_from(frame.kind)
        .ok()
        .filter(|k| *k != FrameKind::Unspecified)
        .ok_or_else(|| (1002, format!("unknown frame kind {}", frame.kind)))?;
    let hooks = &conn.inner.shared.hooks;
    match kind {
        FrameKind::Message => dispatcher.dispatch(frame, false).await,
        FrameKind::Request => {
            if frame.id == 0 {
                return Err((1002, "REQUEST frame with id 0".into()));
            }
            dispatcher.dispatch(frame, true).await;
        }
        FrameKind::Reply | FrameKind::Error => {
            if let Err(err) = conn.complete(frame) {
                hooks.error(&err, Some(conn));
            }
        }
        FrameKind::Cancel => conn.cancel_inflight(frame.id),
        FrameKind::Broadcast
        | FrameKind::Subscribe
        | FrameKind::Unsubscribe
        | FrameKind::Publish => {
            let hub = match (&conn.inner.shared.hub, conn.inner.shared.side) {
                (Some(hub), Side::Server) => Arc::clone(hub),
                _ => {
                    return Err((
                        1002,
                        format!(
                            "{} frames go from client to server only",
                            kind.as_str_name()
                        ),
                    ));
                }
            };
            let id = frame.id;
            let result = fanout(conn, &hub, kind, frame);
            match (id, result) {
                (0, Ok(())) => {}
                (0, Err(status)) => conn.report_to_peer(&status).await,
                (id, Ok(())) => conn.reply(id, Ok(Some(Encoded::ack()))).await,
                (id, Err(status)) => conn.reply(id, Err(status)).await,
            }
        }
        FrameKind::Unspecified => unreachable!("filtered above"),
    }
    Ok(())
}

/// Server side of BROADCAST, SUBSCRIBE, UNSUBSCRIBE and PUBLISH from a client.
/// Relayed payloads are re-framed as MESSAGE without being decoded.
fn fanout(conn: &Connection, hub: &Hub, kind: FrameKind, frame: Frame) -> Result<(), Status> {
    let hooks = &conn.inner.shared.hooks;
    let invalid = |detail: String| {
        let err = Error::InvalidTopic(detail);
        let status = Status::invalid_argument(err.to_string());
        hooks.error(&err, Some(conn));
        status
    };
    match kind {
        FrameKind::Subscribe | FrameKind::Unsubscribe => {
            topics::validate(&frame.topic, true).map_err(invalid)?;
            let sub = Subscription {
                pattern: frame.topic,
                group: (!frame.queue_group.is_empty()).then_some(frame.queue_group),
            };
            if kind == FrameKind::Subscribe {
                if hub.subscribe(conn, &sub).map_err(Status::from)? {
                    hooks.subscribe(conn, &sub, true);
                }
            } else if hub.unsubscribe(conn, &sub) {
                hooks.subscribe(conn, &sub, false);
            }
            Ok(())
        }
        FrameKind::Publish => {
            topics::validate(&frame.topic, false).map_err(invalid)?;
            let topic = frame.topic.clone();
            let type_name = frame.r#type.clone();
            let reached = hub.publish(&topic, relay(frame, true));
            hooks.publish(&topic, &type_name, reached);
            Ok(())
        }
        _ => {
            let type_name = frame.r#type.clone();
            let reached = hub.broadcast(relay(frame, false), None);
            hooks.broadcast(&type_name, reached);
            Ok(())
        }
    }
}

/// Re-frames a client's BROADCAST or PUBLISH as the MESSAGE its recipients get.
fn relay(frame: Frame, keep_topic: bool) -> Bytes {
    frame::encode(&Frame {
        kind: FrameKind::Message as i32,
        r#type: frame.r#type,
        payload: frame.payload,
        headers: frame.headers,
        topic: if keep_topic {
            frame.topic
        } else {
            String::new()
        },
        created_unix_us: frame.created_unix_us,
        ..Frame::default()
    })
}

/// Turns MESSAGE and REQUEST frames into handler runs, under the concurrency caps.
struct Dispatcher {
    conn: Connection,
    /// This connection's handler cap; each running handler holds a permit.
    per_conn: Arc<Semaphore>,
    /// Ordered mode: the queue of the connection's single worker. Dropping it
    /// (when the reader ends) lets the worker finish what is queued and stop.
    ordered: Option<mpsc::Sender<Job>>,
}

impl Dispatcher {
    fn new(conn: &Connection) -> Dispatcher {
        let config = conn.config();
        let ordered = config.ordered.then(|| {
            let (tx, rx) = mpsc::channel(config.max_concurrent_per_connection);
            let shared = Arc::clone(&conn.inner.shared);
            shared
                .handlers
                .spawn(ordered_worker(rx, Arc::clone(&shared)));
            tx
        });
        Dispatcher {
            conn: conn.clone(),
            per_conn: Arc::new(Semaphore::new(config.max_concurrent_per_connection)),
            ordered,
        }
    }

    async fn dispatch(&mut self, frame: Frame, is_request: bool) {
        let conn = &self.conn;
        let shared = &conn.inner.shared;
        let id = frame.id;
        if shared.is_shutting_down() {
            // New work is refused so the drain ends; the peer is told either way.
            let status: Status = Error::ShuttingDown.into();
            if is_request {
                conn.reply(id, Err(status)).await;
            } else {
                conn.report_to_peer(&status).await;
            }
            return;
        }
        let Some(route) = shared.routes.get(&frame.r#type).cloned() else {
            shared
                .hooks
                .metrics
                .unknown_type()
                .received
                .fetch_add(1, Ordering::Relaxed);
            let status =
                Status::unimplemented(format!("no handler for message type {:?}", frame.r#type));
            shared
                .hooks
                .error(&Error::UnknownType(frame.r#type), Some(conn));
            if is_request {
                conn.reply(id, Err(status)).await;
            } else {
                conn.report_to_peer(&status).await;
            }
            return;
        };
        route.stats.received.fetch_add(1, Ordering::Relaxed);
        let cancel = if is_request {
            // Cancelled by CANCEL, or by `finish` when the connection ends.
            let token = CancellationToken::new();
            if conn.is_closed() || !conn.register_inflight(id, token.clone()) {
                let status =
                    Status::invalid_argument(format!("request id {id} is already in flight"));
                conn.reply(id, Err(status)).await;
                return;
            }
            Cancel::Own(token)
        } else {
            // One-way work outlives its connection (nothing is lost when the
            // peer closes right after sending); only a shutdown deadline stops it.
            Cancel::Owner(Arc::clone(shared))
        };
        let deadline = (is_request && frame.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(frame.timeout_ms)));
        let metadata = Metadata {
            size: frame.payload.len(),
            type_name: frame.r#type,
            id,
            created: frame::created(frame.created_unix_us),
            topic: (!frame.topic.is_empty()).then_some(frame.topic),
        };
        let ctx = Context::new(conn.clone(), metadata, frame.headers, cancel, deadline);
        let job = Job {
            route,
            ctx,
            payload: frame.payload,
            is_request,
        };
        // Borrowed, not cloned: cloning a token takes its lock, once per message.
        let kill = &conn.inner.kill;
        if let Some(queue) = &self.ordered {
            tokio::select! {
                _ = kill.cancelled() => {}
                _ = queue.send(job) => {}
            }
            return;
        }
        let mut run = Box::pin(job.run());
        // Fast path: with room under both caps, run the handler here until its
        // first await; only work that suspends becomes a task of its own.
        if let (Ok(local), Ok(global)) = (self.per_conn.try_acquire(), shared.global.try_acquire())
        {
            if futures_util::poll!(run.as_mut()).is_ready() {
                return;
            }
            local.forget();
            global.forget();
            let (per_conn, global) = (Arc::clone(&self.per_conn), Arc::clone(&shared.global));
            shared.handlers.spawn(async move {
                run.await;
                per_conn.add_permits(1);
                global.add_permits(1);
            });
            return;
        }
        let permits = async {
            let local = Arc::clone(&self.per_conn).acquire_owned().await.ok()?;
            let global = Arc::clone(&shared.global).acquire_owned().await.ok()?;
            Some((local, global))
        };
        let permits = tokio::select! {
            _ = kill.cancelled() => None,
            permits = permits => permits,
        };
        if let Some(permits) = permits {
            shared.handlers.spawn(async move {
                run.await;
                drop(permits);
            });
        }
    }
}

async fn ordered_worker(mut queue: mpsc::Receiver<Job>, shared: Arc<crate::shared::Shared>) {
    while let Some(job) = queue.recv().await {
        let Ok(_permit) = shared.global.acquire().await else {
            break;
        };
        job.run().await;
    }
}

/// One handler run: the route, its context and the still-encoded payload.
struct Job {
    route: Route,
    ctx: Context,
    payload: Bytes,
    is_request: bool,
}

impl Job {
    async fn run(self) {
        let Job {
            route,
            ctx,
            payload,
            is_request,
        } = self;
        let deadline = ctx.deadline();
        let id = ctx.metadata().correlation_id();
        let observed = ctx.clone();
        let conn = observed.connection();
        let hooks = &conn.inner.shared.hooks;
        if hooks.has_handler_hooks() {
            hooks.handler_start(&observed);
        }
        let started = Instant::now();
        hooks.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&hooks.metrics);
        let span = tracing::debug_span!(
            "goomerang.handle",
            r#type = %observed.metadata().type_name(),
            id,
            conn = conn.id(),
            traceparent = observed.header("traceparent"),
        );
        let handler = AssertUnwindSafe((route.handler)(ctx, payload))
            .catch_unwind()
            .instrument(span);
        tokio::pin!(handler);
        let cancel = observed.cancel();
        // A handler that finishes on its first poll never registers for cancellation.
        let result = match futures_util::poll!(handler.as_mut()) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                _ = sleep_until(deadline) => None,
                result = &mut handler => Some(result),
            },
        };
        if is_request {
            conn.remove_inflight(id);
        }
        let type_name = || observed.metadata().type_name().to_owned();
        let outcome = match result {
            None => {
                // Whatever stopped it (CANCEL, deadline, connection end), make
                // sure everything watching the context learns of it.
                cancel.cancel();
                tracing::debug!(conn = conn.id(), id, type_name = %type_name(), "handler cancelled");
                return;
            }
            Some(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                hooks.error(
                    &Error::HandlerPanicked {
                        type_name: type_name(),
                        message: message.clone(),
                    },
                    Some(conn),
                );
                Err(Status::internal(format!(
                    "handler for {} panicked: {message}",
                    type_name()
                )))
            }
            Some(Ok(outcome)) => outcome,
        };
        let took = started.elapsed();
        route.stats.handler.observe(took);
        if hooks.has_handler_hooks() {
            hooks.handler_end(&observed, outcome.as_ref().map(drop), took);
        }
        if is_request {
            let outcome = match outcome {
                Ok(None) if route.kind == Kind::OneWay => Err(Status::unimplemented(format!(
                    "the handler for {} is one-way and sends no reply",
                    type_name()
                ))),
                other => other,
            };
            conn.reply(id, outcome).await;
        } else if let Err(status) = outcome {
            hooks.error(
                &Error::Handler {
                    type_name: type_name(),
                    status,
                },
                Some(conn),
            );
        }
    }
}

/// Counts a running handler in `goomerang_handlers_in_flight` until dropped.
struct InFlight<'a>(&'a crate::metrics::Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
