//! `CloseState`: how a connection closes: the tokens and flags the driver and callers watch, and what ended it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::sync::lock;

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The RFC 6455 close code: from the close frame, 1005 if it had none,
    /// 1006 if the connection was lost without one.
    pub code: u16,
    /// The close reason (may be empty).
    pub reason: String,
    /// Who started the close.
    pub initiator: Initiator,
}

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Initiator {
    /// This side sent the first close frame (or gave up on the peer).
    Local,
    /// The peer sent the first close frame.
    Remote,
    /// Nobody closed: the transport failed or was reset.
    Lost,
}

/// Longest close reason RFC 6455 allows (125-byte control payload minus the code).
const MAX_CLOSE_REASON: usize = 123;

/// The closing and closed state of one connection. Each token has an atomic
/// mirror for hot-path checks (a token's `is_cancelled` takes a lock; a flag
/// is one atomic load); closing has only its flag, which the reader (its one
/// watcher) is woken to read.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    /// Cancelled once, when the connection has ended; request handlers and waiters watch it.
    closed: CancellationToken,
    /// Cancelled to drop the connection at once (writer failure, shutdown deadline).
    kill: CancellationToken,
    /// The reader, waiting for its socket, is woken here when a close begins
    /// or the connection is killed (see [`poll_stop`](Self::poll_stop)).
    reader: AtomicWaker,
    closed_flag: AtomicBool,
    closing_flag: AtomicBool,
    killed_flag: AtomicBool,
    /// The code and reason this side closed with, first one wins.
    local: Mutex<Option<(u16, String)>>,
    /// How the connection ended, set once when it has.
    info: OnceLock<CloseInfo>,
}

impl CloseState {
    /// Starts a close with `code` and `reason` (truncated to what RFC 6455
    /// allows): records it and calls `send` with them, under the lock, unless
    /// a close already started or the connection ended. Then marks it closing.
    pub(crate) fn begin(&self, code: u16, reason: &str, send: impl FnOnce(u16, String)) {
        {
            let mut local = lock(&self.local);
            if local.is_some() || self.is_closed() {
                return;
            }
            let reason = truncate(reason, MAX_CLOSE_REASON).to_owned();
            *local = Some((code, reason.clone()));
            send(code, reason);
        }
        self.closing_flag.store(true, Ordering::Release);
        self.reader.wake();
    }

    /// Records `code` and `reason` as this side's close, unless one is recorded.
    pub(crate) fn record(&self, code: u16, reason: &str) {
        let mut local = lock(&self.local);
        if local.is_none() {
            *local = Some((code, truncate(reason, MAX_CLOSE_REASON).to_owned()));
        }
    }

    /// Drops the connection at once.
    pub(crate) fn kill(&self) {
        self.killed_flag.store(true, Ordering::Release);
        self.kill.cancel();
        self.reader.wake();
    }

    /// Marks the connection ended, with how.
    pub(crate) fn finish(&self, info: CloseInfo) {
        let _ = self.info.set(info);
        self.closed_flag.store(true, Ordering::Release);
        self.closed.cancel();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed_flag.load(Ordering::Acquire)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing_flag.load(Ordering::Acquire)
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed_flag.load(Ordering::Acquire)
    }

    pub(crate) fn local(&self) -> Option<(u16, String)> {
        lock(&self.local).clone()
    }

    pub(crate) fn info(&self) -> Option<&CloseInfo> {
        self.info.get()
    }

    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    pub(crate) fn kill_token(&self) -> &CancellationToken {
        &self.kill
    }

    /// Ready once the connection is killed, or a close has begun (unless
    /// the reader has seen it: `closing_seen`); otherwise the reader's waker
    /// is registered for either. One atomic exchange, no lock: the reader
    /// polls this each time it waits for its socket.
    pub(crate) fn poll_stop(&self, closing_seen: bool, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flags are read; they are set before the wake.
        self.reader.register(cx.waker());
        if self.is_killed() || (!closing_seen && self.is_closing()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The error a send or call on the closed (or closing) connection gets.
    pub(crate) fn error(&self) -> Error {
        match self.info.get() {
            Some(info) => Error::ConnectionClosed {
                code: info.code,
                reason: info.reason.clone(),
            },
            None => match self.local() {
                Some((code, reason)) => Error::ConnectionClosed { code, reason },
                None => Error::ConnectionClosed {
                    code: 1006,
                    reason: "connection lost".into(),
                },
            },
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
