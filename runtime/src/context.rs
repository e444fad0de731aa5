//! `Context`: what a handler knows about the message it is handling and the connection it came on.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::message::{Headers, Metadata};

/// Handed to every handler and middleware: the connection (to send or request
/// back), the message's headers and metadata, and its cancellation.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    conn: Connection,
    inner: Arc<Inner>,
}

struct Inner {
    metadata: Metadata,
    headers: Headers,
    cancel: Cancel,
    deadline: Option<Instant>,
}

/// What cancels a handler.
pub(crate) enum Cancel {
    /// A request's own token: cancelled by CANCEL, its deadline, or the connection's end.
    Own(CancellationToken),
    /// One-way work: only the owner's shutdown deadline stops it. Borrowed, never
    /// cloned per message (cloning a shared token takes its lock).
    Owner(std::sync::Arc<crate::shared::Shared>),
}

impl Cancel {
    pub(crate) fn is_cancelled(&self) -> bool {
        match self {
            Cancel::Own(token) => token.is_cancelled(),
            Cancel::Owner(shared) => shared.abort.is_cancelled(),
        }
    }

    pub(crate) async fn cancelled(&self) {
        match self {
            Cancel::Own(token) => token.cancelled().await,
            Cancel::Owner(shared) => shared.abort.cancelled().await,
        }
    }

    /// Makes sure everything watching learns the work stopped.
    pub(crate) fn cancel(&self) {
        if let Cancel::Own(token) = self {
            token.cancel();
        }
    }
}

impl Context {
    pub(crate) fn new(
        conn: Connection,
        metadata: Metadata,
        headers: Headers,
        cancel: Cancel,
        deadline: Option<Instant>,
    ) -> Context {
        Context {
            conn,
            inner: Arc::new(Inner {
                metadata,
                headers,
                cancel,
                deadline,
            }),
        }
    }

    /// The connection the message arrived on; use it to send or request back.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Type name, size, correlation id and creation time of the message.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// All headers of the message.
    pub fn headers(&self) -> &Headers {
        &self.inner.headers
    }

    /// One header's value.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.inner.headers.get(key).map(String::as_str)
    }

    /// When the requester stops waiting, if it said. The runtime stops the
    /// handler at that moment; use it to size work or pass it downstream.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Whether the work was cancelled: the requester sent CANCEL, the deadline
    /// passed, or the connection ended.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when the work is cancelled (see [`is_cancelled`](Self::is_cancelled)).
    /// After that the handler's result is discarded; the runtime drops the
    /// handler future at its next await point.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    pub(crate) fn cancel(&self) -> &Cancel {
        &self.inner.cancel
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("connection", &self.conn.id())
            .field("metadata", &self.inner.metadata)
            .field("headers", &self.inner.headers)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}
