//! The per-connection driver: a reader that validates and dispatches frames, and a writer that batches.

pub(crate) mod dispatch;
pub(crate) mod shared;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::Instrument as _;

use crate::conn::close::{CloseInfo, Initiator};
use crate::conn::connection::{Connection, Wait};
use crate::conn::writer::WriteHalf;
use crate::hooks::Hooks;
use crate::incident::Incident;
use crate::pubsub::control;
use crate::wire::frame::{self, Incoming};
use crate::wire::proto::FrameKind;
use crate::wire::reply::Encoded;
use crate::wire::status::Status;
use crate::ws::io::ReadSide;
use crate::ws::{Upgraded, WsRead};
use dispatch::{Carry, Dispatcher, undecodable};
use shared::Shared;

/// Runs one connection to its end: spawns the writer, reads until the peer
/// or this side closes, then fails what is waiting and reports the close.
pub(crate) async fn run(ws: Upgraded, conn: Connection, shared: Arc<Shared>) {
    let (stream, sink) = ws.split(conn.config().ws_limits());
    conn.writer().attach(WriteHalf::new(Box::pin(sink)));
    let mut writer = tokio::spawn(write_loop(conn.clone(), Arc::clone(&shared)));
    shared.hooks().connect(&conn);
    let span = tracing::debug_span!(
        "goomerang.connection",
        conn = conn.id(),
        peer = ?conn.peer_addr(),
        side = shared.metrics().side(),
    );
    let info = async {
        let dispatcher = Dispatcher::new(&conn, &shared);
        read_loop(stream, &conn, &shared, &dispatcher).await
    }
    .instrument(span)
    .await;
    conn.finish(info.clone());
    // The writer stops once the queue holds no more (a close frame goes out
    // first); a writer stuck on a dead socket is cut off, at once if the
    // connection was killed.
    let grace = if conn.is_killed() {
        Duration::ZERO
    } else {
        shared.config().close_timeout
    };
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    conn.writer().detach();
    tracing::debug!(conn = conn.id(), code = info.code, reason = %info.reason, initiator = ?info.initiator, "connection ended");
    shared.hooks().disconnect(&conn, &info);
}

async fn write_loop(conn: Connection, shared: Arc<Shared>) {
    if let Err(err) = conn.writer().write_loop().await {
        write_failed(&conn, shared.hooks(), err);
    }
}

/// A write to the socket failed: the connection is dropped.
fn write_failed(conn: &Connection, hooks: &Hooks, err: tungstenite::Error) {
    if !conn.is_closed() && !conn.is_closing() {
        hooks.error(&Incident::Transport(err), Some(conn));
    }
    conn.kill();
}

async fn read_loop(
    mut stream: WsRead<ReadSide>,
    conn: &Connection,
    shared: &Shared,
    dispatcher: &Dispatcher,
) -> CloseInfo {
    let close_timeout = conn.config().close_timeout;
    let far = Duration::from_secs(86_400 * 365);
    let close_deadline = tokio::time::sleep(far);
    tokio::pin!(close_deadline);
    let keepalive = conn.config().keepalive;
    let mut last_seen = Instant::now();
    let check = tokio::time::sleep(keepalive.map_or(far, |k| k.interval));
    tokio::pin!(check);
    let mut closing = false;
    let mut busy = 0;
    // What one frame's dispatch leaves for the next.
    let mut carry = Carry::new(shared.global());
    let mut remote_close: Option<(u16, String, bool)> = None;
    loop {
        // Atomic checks on every frame: the control futures below are polled
        // (and register wakers; the timers' take locks) only while the socket
        // is idle.
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
        let last_end = carry.ended.take();
        let mut waited = false;
        let next = tokio::select! {
            biased;
            next = next_frame(&mut stream, conn, shared.hooks(), &mut busy, &mut waited, &mut carry) => next,
            // Killed, or closing from this side: the checks above act on it.
            _ = std::future::poll_fn(|cx| conn.poll_stop(closing, cx)) => continue,
            _ = &mut close_deadline, if closing => break,
            _ = &mut check, if keepalive.is_some() => {
                let Some(k) = keepalive else { continue };
                let now = Instant::now();
                let silent = now - last_seen;
                if silent >= k.interval + k.timeout {
                    shared.hooks().error(&Incident::KeepaliveTimeout { silent }, Some(conn));
                    conn.abort(1006, "keepalive timeout: the peer stopped answering");
                    break;
                }
                let next_check = if silent >= k.interval {
                    conn.ping();
                    (now + k.interval).min(last_seen + k.interval + k.timeout)
                } else {
                    last_seen + k.interval
                };
                check.as_mut().reset(next_check);
                continue;
            }
        };
        // One clock reading per frame, the keepalive's last sign of life and
        // the handler's start: the last handler's end while frames stream in.
        let received = match last_end {
            Some(at) if !waited => at,
            _ => Instant::now(),
        };
        last_seen = received;
        let message = match next {
            None => break,
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                on_read_error(conn, shared.hooks(), err, closing);
                break;
            }
        };
        match message {
            WsMessage::Binary(bytes) => {
                if conn.is_closing() {
                    continue; // closing: the peer's data can no longer be answered
                }
                // Handled on this poll (a handler runs inline until its first
                // await); only what must wait is awaited, boxed.
                let mut bytes = Some(bytes);
                let lent = &mut carry;
                let handled = std::future::poll_fn(move |cx| {
                    // Ready on its first poll, so never polled again.
                    Poll::Ready(match bytes.take() {
                        Some(bytes) => {
                            let at = (received, &mut *lent);
                            handle_binary(conn, shared, dispatcher, bytes, at, cx)
                        }
                        None => Ok(None),
                    })
                })
                .await;
                match handled {
                    Ok(None) => {}
                    Ok(Some(wait)) => {
                        carry.release_slot();
                        wait.await;
                        carry.ended = None;
                    }
                    Err((code, detail)) => violation(conn, shared.hooks(), code, detail),
                }
            }
            WsMessage::Text(_) => violation(
                conn,
                shared.hooks(),
                1003,
                "text frames are not part of the goomerang protocol; send binary Frame messages"
                    .into(),
            ),
            WsMessage::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                let we_started = conn.local_close().is_some();
                if !we_started {
                    conn.answer_close(code, &reason);
                }
                remote_close = Some((code, reason, we_started));
            }
            WsMessage::Ping(payload) => {
                // No pong once this side sent its close frame.
                if !conn.is_closing() {
                    conn.pong(payload);
                }
            }
            WsMessage::Pong(_) | WsMessage::Frame(_) => {}
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

/// Frames handled before the reader writes out what they queued even though
/// more input is waiting: bounds reply latency under a steady stream of input.
const FLUSH_EVERY: u32 = 64;

/// The next message from the socket. Before waiting for one (and every
/// [`FLUSH_EVERY`] frames) the reader writes out what the frames it handled
/// queued, so replies made on its poll go out without waking the writer;
/// before waiting, it also lets go of what it kept for streaming frames.
async fn next_frame(
    stream: &mut WsRead<ReadSide>,
    conn: &Connection,
    hooks: &Hooks,
    busy: &mut u32,
    waited: &mut bool,
    carry: &mut Carry,
) -> Option<Result<WsMessage, tungstenite::Error>> {
    let writer = conn.writer();
    std::future::poll_fn(|cx| {
        if *busy >= FLUSH_EVERY {
            *busy = 1;
            if let Err(err) = writer.reader_idle(cx) {
                write_failed(conn, hooks, err);
            }
            writer.reader_busy();
        }
        match stream.poll_next_unpin(cx) {
            Poll::Ready(next) => {
                // Set on every frame: a dispatch that waited cleared it.
                writer.reader_busy();
                *busy += 1;
                Poll::Ready(next)
            }
            Poll::Pending => {
                *waited = true;
                carry.idle();
                if *busy > 0 {
                    *busy = 0;
                    if let Err(err) = writer.reader_idle(cx) {
                        write_failed(conn, hooks, err);
                    }
                }
                Poll::Pending
            }
        }
    })
    .await
}

fn on_read_error(conn: &Connection, hooks: &Hooks, err: tungstenite::Error, closing: bool) {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError as P;
    match err {
        E::ConnectionClosed | E::AlreadyClosed => {}
        E::Capacity(detail) => {
            let max = conn.config().max_message_size;
            violation(
                conn,
                hooks,
                1009,
                format!("message exceeds the {max} byte limit ({detail})"),
            );
        }
        // RFC 6455 violations get a close frame (§7.1.7), never a silent drop.
        E::Utf8(detail) if !closing => violation(
            conn,
            hooks,
            1007,
            format!("WebSocket text or close reason is not valid UTF-8: {detail}"),
        ),
        E::Protocol(
            detail @ (P::UnmaskedFrameFromClient
            | P::MaskedFrameFromServer
            | P::NonZeroReservedBits
            | P::UnknownDataFrameType(_)
            | P::UnknownControlFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::InvalidCloseSequence
            | P::InvalidOpcode(_)),
        ) if !closing => violation(
            conn,
            hooks,
            1002,
            format!("WebSocket protocol violation: {detail}"),
        ),
        other if closing => {
            tracing::debug!(conn = conn.id(), error = %other, "read error while closing")
        }
        other => hooks.error(&Incident::Transport(other), Some(conn)),
    }
}

/// The answer to a client's control frame `id` (none for id 0 unless it
/// failed): queued at once when there is room, else the wait for room.
fn answer_control_now<'a>(
    conn: &'a Connection,
    id: u64,
    result: Result<Option<Encoded>, Status>,
    type_name: &str,
    method: &str,
) -> Option<Wait<'a>> {
    match (id, result) {
        (0, Ok(_)) => None,
        (0, Err(status)) => conn.report_now(&status, type_name, method),
        (id, outcome) => conn.answer_now(id, outcome.map(|r| Some(r.unwrap_or_else(Encoded::ack)))),
    }
}

/// [`answer_control_now`], waiting for room.
async fn answer_control(
    conn: &Connection,
    id: u64,
    result: Result<Option<Encoded>, Status>,
    type_name: &str,
    method: &str,
) {
    if let Some(wait) = answer_control_now(conn, id, result, type_name, method) {
        wait.await;
    }
}

/// Reports a protocol violation and closes the connection with `code`.
fn violation(conn: &Connection, hooks: &Hooks, code: u16, detail: String) {
    hooks.error(
        &Incident::Protocol {
            close_code: code,
            detail: detail.clone(),
        },
        Some(conn),
    );
    conn.start_close(code, &detail);
}

/// Validates one binary message and acts on it, on the reader's poll
/// (`cx`). Returns what is left to wait for, if anything (boxed: rare, and
/// kept out of the reader's state). An `Err` is a protocol violation: the
/// close code and what the peer did.
fn handle_binary<'a>(
    conn: &'a Connection,
    shared: &'a Shared,
    dispatcher: &'a Dispatcher,
    bytes: Bytes,
    (received, carry): (Instant, &mut Carry),
    cx: &mut Context<'_>,
) -> Result<Option<Wait<'a>>, (u16, String)> {
    shared.metrics().frame_received(bytes.len());
    let mut frame = Incoming::default();
    frame::decode_into(bytes, &mut frame).map_err(undecodable)?;
    let kind = FrameKind::try_from(frame.kind)
        .ok()
        .filter(|k| *k != FrameKind::Unspecified);
    // The dispatcher checks the type name of what it routes (a name equal
    // to a route's needs no check); every other frame's is checked here,
    // as is any frame's that breaks a rule (an undecodable frame is
    // reported first, whatever else is wrong with it).
    let dispatched = matches!(kind, Some(FrameKind::Message | FrameKind::Request))
        && (frame.id != 0) == (kind == Some(FrameKind::Request));
    if !dispatched {
        frame.check_names().map_err(undecodable)?;
    }
    let kind = kind.ok_or_else(|| (1002, format!("unknown frame kind {}", frame.kind)))?;
    let hooks = shared.hooks();
    match kind {
        FrameKind::Message => {
            if frame.id != 0 {
                return Err((
                    1002,
                    format!(
                        "MESSAGE frame with id {}; one-way messages carry id 0",
                        frame.id
                    ),
                ));
            }
            dispatcher.dispatch(&mut frame, false, received, carry, cx)
        }
        FrameKind::Request => {
            if frame.id == 0 {
                return Err((1002, "REQUEST frame with id 0".into()));
            }
            dispatcher.dispatch(&mut frame, true, received, carry, cx)
        }
        FrameKind::Reply | FrameKind::Error => {
            if let Err(err) = conn.complete(&mut frame) {
                hooks.error(&err, Some(conn));
            }
            Ok(None)
        }
        FrameKind::Cancel => {
            conn.cancel_inflight(frame.id);
            Ok(None)
        }
        FrameKind::Broadcast
        | FrameKind::Subscribe
        | FrameKind::Unsubscribe
        | FrameKind::Publish => {
            let hub = match shared.pubsub() {
                Some(hub) => hub,
                None => {
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
            let (type_name, method) = (frame.type_name.clone(), frame.method.clone());
            let result = match control::handle(
                conn,
                hub,
                shared.routes().middleware(),
                hooks,
                kind,
                frame,
            ) {
                Ok(control::Step::Done(reply)) => Ok(reply),
                // A subscription may wait for the broker.
                Ok(control::Step::Subscribe { sub, from }) => {
                    return Ok(Some(Box::pin(async move {
                        let result = control::subscribe(conn, hub, hooks, sub, from).await;
                        answer_control(conn, id, result, &type_name, &method).await;
                    })));
                }
                Err(status) => Err(status),
            };
            // Answered at once when the queue has room, as it usually has.
            Ok(answer_control_now(conn, id, result, &type_name, &method))
        }
        FrameKind::Unspecified => unreachable!("filtered above"),
    }
}
