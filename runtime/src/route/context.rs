//! `Context`: what a handler knows about the message it is handling and the connection it came on.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::connection::Connection;
use crate::sync::lock;
use crate::wire::message::{Headers, Metadata};

/// Handed to every handler and middleware: the connection (to send or request
/// back), the message's headers and metadata, its cancellation, typed
/// extensions middleware passes to the handler, and the reply's headers.
///
/// Cheap to clone; clones share the extensions and reply headers.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    /// Always set while a context is in use; a spare parked on its thread
    /// holds none, so it keeps no ended connection alive.
    conn: Option<Connection>,
    metadata: Metadata,
    headers: Headers,
    cancel: Cancel,
    deadline: Option<Instant>,
    /// Which parts of `local` were touched ([`TOUCHED_REPLY`], ...), so the
    /// runtime takes the lock only when a handler or middleware used them.
    touched: AtomicU8,
    local: Mutex<Local>,
}

/// What handlers and middleware write while the message is handled.
#[derive(Default)]
struct Local {
    reply_headers: Headers,
    extensions: http::Extensions,
    decode_error: Option<prost::DecodeError>,
}

const TOUCHED_REPLY: u8 = 1;
const TOUCHED_DECODE: u8 = 2;
const TOUCHED_EXTENSIONS: u8 = 4;

/// What cancels a handler.
pub(crate) enum Cancel {
    /// A request's: cancelled by CANCEL, its deadline, or the connection's
    /// end. Its token is made only when something waits on it (most handlers
    /// end on their first poll, before anyone asks); until then the
    /// connection's in-flight table says whether CANCEL or the end came.
    Request {
        /// The request's id and its registration in the in-flight table.
        id: u64,
        seq: u64,
        token: OnceLock<CancellationToken>,
        /// [`RUNNING`], [`STOPPED`] (cancelled here) or [`FINISHED`].
        state: AtomicU8,
    },
    /// One-way work: only the owner's shutdown deadline stops it (its token
    /// is the connection's owner's, borrowed: cloning a shared token takes its lock).
    Owner,
}

/// The handler runs; the in-flight table says whether it was cancelled.
const RUNNING: u8 = 0;
/// Cancelled here (its deadline passed, or it stopped for another reason).
const STOPPED: u8 = 1;
/// Ended and answered: no longer in the table, and never cancelled now.
const FINISHED: u8 = 2;

impl Cancel {
    /// A request's, registered in the in-flight table as `seq`.
    pub(crate) fn request(id: u64, seq: u64) -> Cancel {
        Cancel::Request {
            id,
            seq,
            token: OnceLock::new(),
            state: AtomicU8::new(RUNNING),
        }
    }

    /// The request's token, made on first need: shared with the in-flight
    /// table while the request is there, cancelled already if it was cancelled.
    fn token(&self, conn: &Connection) -> Option<&CancellationToken> {
        let Cancel::Request {
            id,
            seq,
            token,
            state,
        } = self
        else {
            return None;
        };
        Some(token.get_or_init(|| {
            let shared = conn.inflight_token(*id, *seq);
            let state = state.load(Ordering::Acquire);
            let cancelled = state == STOPPED || (shared.is_none() && state != FINISHED);
            let token = shared.unwrap_or_default();
            if cancelled {
                token.cancel();
            }
            token
        }))
    }

    pub(crate) fn is_cancelled(&self, conn: &Connection) -> bool {
        match self {
            Cancel::Request {
                id,
                seq,
                token,
                state,
            } => match (token.get(), state.load(Ordering::Acquire)) {
                (Some(token), _) => token.is_cancelled(),
                (None, STOPPED) => true,
                (None, FINISHED) => false,
                (None, _) => !conn.is_inflight(*id, *seq),
            },
            Cancel::Owner => conn.owner_abort().is_cancelled(),
        }
    }

    pub(crate) async fn cancelled(&self, conn: &Connection) {
        match self {
            Cancel::Request { .. } => {
                if let Some(token) = self.token(conn) {
                    token.cancelled().await;
                }
            }
            Cancel::Owner => conn.owner_abort().cancelled().await,
        }
    }

    /// Makes sure everything watching learns the work stopped.
    pub(crate) fn cancel(&self, conn: &Connection) {
        if let Cancel::Request { state, .. } = self {
            state.store(STOPPED, Ordering::Release);
            if let Some(token) = self.token(conn) {
                token.cancel();
            }
        }
    }

    /// The request ended and was answered: it is no longer cancelled by
    /// anything (it left the in-flight table).
    pub(crate) fn finished(&self) {
        if let Cancel::Request { state, .. } = self {
            let _ = state.compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The allocation of a connection's last handler context, which the next
/// context reuses once nothing else holds it: one allocation fewer per
/// message, and no reference counts touched. The reader gets it back from a
/// run that ended on its poll ([`Context::into_spare`]), which drops what
/// handlers and middleware wrote (extensions, reply headers); the message's
/// own data (its metadata and headers) stays until the next message replaces
/// it, or until the reader waits for input and parks the spare on its
/// thread, cleared of all of it and of its connection ([`Spare::park`]). A
/// run that suspends keeps its context: a slow handler never shares one.
pub(crate) struct Spare(Arc<Inner>);

thread_local! {
    /// The spare a reader let go of as it went to wait for input, for the
    /// next context made on this thread, by any connection: a connection
    /// that handles one request at a time allocates no context per request,
    /// and a quiet connection still holds none.
    static PARKED: Cell<Option<Spare>> = const { Cell::new(None) };
}

impl Spare {
    /// Leaves this spare, cleared, for the next context made on this thread
    /// (in place of any left before), if nothing else holds it.
    pub(crate) fn park(mut self) {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.clear();
            PARKED.set(Some(self));
        }
    }
}

impl Inner {
    fn new(
        conn: Connection,
        metadata: Metadata,
        headers: Headers,
        cancel: Cancel,
        deadline: Option<Instant>,
    ) -> Inner {
        Inner {
            conn: Some(conn),
            metadata,
            headers,
            cancel,
            deadline,
            touched: AtomicU8::new(0),
            local: Mutex::new(Local::default()),
        }
    }

    /// Drops everything the last message left, its connection included.
    fn clear(&mut self) {
        self.conn = None;
        self.metadata = Metadata::default();
        if self.headers.capacity() != 0 {
            self.headers = Headers::new();
        }
        self.cancel = Cancel::Owner;
        self.clear_local();
    }

    /// Drops what handlers and middleware wrote for the last message
    /// (extensions, reply headers, a decode error), if they wrote anything:
    /// the common case writes nothing, and costs one check.
    fn clear_local(&mut self) {
        if *self.touched.get_mut() != 0 {
            *self.local.get_mut().unwrap_or_else(PoisonError::into_inner) = Local::default();
            *self.touched.get_mut() = 0;
        }
        self.local.clear_poison();
    }
}

impl Context {
    /// A context in `spare`'s allocation (or, with none, the one parked on
    /// this thread) if nothing else holds it, else in a new one. The spare
    /// is taken either way: [`into_spare`](Self::into_spare) gives one back.
    pub(crate) fn new_in(
        spare: &mut Option<Spare>,
        conn: &Connection,
        metadata: Metadata,
        headers: Headers,
        cancel: Cancel,
        deadline: Option<Instant>,
    ) -> Context {
        if let Some(Spare(mut held)) = spare.take().or_else(|| PARKED.take())
            && let Some(inner) = Arc::get_mut(&mut held)
        {
            // Field by field, not a whole new `Inner` moved in: most of it
            // is as the last message's run left it. A connection's spare
            // holds the connection already.
            if !inner.conn.as_ref().is_some_and(|held| held.same(conn)) {
                inner.conn = Some(conn.clone());
            }
            inner.metadata = metadata;
            inner.headers = headers;
            inner.cancel = cancel;
            inner.deadline = deadline;
            // Cleared when its run ended, unless a clone outlived the run.
            inner.clear_local();
            return Context { inner: held };
        }
        let inner = Inner::new(conn.clone(), metadata, headers, cancel, deadline);
        Context {
            inner: Arc::new(inner),
        }
    }

    /// The context of a run that ended, as the spare for the next message;
    /// what handlers and middleware wrote on it goes now.
    pub(crate) fn into_spare(mut self) -> Spare {
        if self.inner.touched.load(Ordering::Relaxed) != 0
            && let Some(inner) = Arc::get_mut(&mut self.inner)
        {
            inner.clear_local();
        }
        Spare(self.inner)
    }

    /// The connection the message arrived on; use it to send or request back.
    pub fn connection(&self) -> &Connection {
        self.inner
            .conn
            .as_ref()
            .expect("a context in use holds its connection (only a parked spare holds none)")
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
        self.inner.cancel.is_cancelled(self.connection())
    }

    /// Resolves when the work is cancelled (see [`is_cancelled`](Self::is_cancelled)).
    /// After that the handler's result is discarded; the runtime drops the
    /// handler future at its next await point.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled(self.connection()).await;
    }

    /// Sets a header on the reply to this request (like tonic's
    /// `Response::metadata_mut`); the caller reads it from
    /// [`Response::headers`](crate::Response::headers). Replaces an earlier
    /// value for `key`. Ignored for one-way messages and failed requests.
    pub fn set_reply_header(&self, key: impl Into<String>, value: impl Into<String>) {
        lock(&self.inner.local)
            .reply_headers
            .insert(key.into(), value.into());
        self.inner
            .touched
            .fetch_or(TOUCHED_REPLY, Ordering::Release);
    }

    /// Stores a typed value for the rest of this message's handling: what
    /// middleware uses to hand the handler something it worked out (the
    /// authenticated user, a trace span, a database transaction). Replaces and
    /// returns an earlier value of the same type. Like `http::Extensions`.
    ///
    /// ```
    /// use goomerang::{Status, middleware};
    /// #[derive(Clone)]
    /// struct User(String);
    /// let auth = middleware::from_fn(|ctx, payload, next| async move {
    ///     let Some(token) = ctx.header("token") else {
    ///         return Err(Status::unauthenticated("no token"));
    ///     };
    ///     ctx.insert_extension(User(token.to_owned()));
    ///     next.run(ctx, payload).await
    /// });
    /// // ... and in the handler: `let user = ctx.extension::<User>();`
    /// # let _ = auth;
    /// ```
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let earlier = lock(&self.inner.local).extensions.insert(value);
        self.inner
            .touched
            .fetch_or(TOUCHED_EXTENSIONS, Ordering::Release);
        earlier
    }

    /// A copy of the value of type `T` stored with
    /// [`insert_extension`](Self::insert_extension), if any.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.inner.local).extensions.get::<T>().cloned()
    }

    /// Removes and returns the value of type `T`, if any.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.inner.local).extensions.remove::<T>()
    }

    pub(crate) fn cancel(&self) -> &Cancel {
        &self.inner.cancel
    }

    /// The reply headers handlers set, if any (taken: called once, when replying).
    pub(crate) fn take_reply_headers(&self) -> Option<Headers> {
        (self.inner.touched.load(Ordering::Acquire) & TOUCHED_REPLY != 0)
            .then(|| std::mem::take(&mut lock(&self.inner.local).reply_headers))
    }

    /// Records that the payload did not decode.
    pub(crate) fn decode_failed(&self, err: prost::DecodeError) {
        lock(&self.inner.local).decode_error = Some(err);
        self.inner
            .touched
            .fetch_or(TOUCHED_DECODE, Ordering::Release);
    }

    /// Why the payload did not decode, if it did not (taken).
    pub(crate) fn take_decode_error(&self) -> Option<prost::DecodeError> {
        if self.inner.touched.load(Ordering::Acquire) & TOUCHED_DECODE == 0 {
            return None;
        }
        lock(&self.inner.local).decode_error.take()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("connection", &self.connection().id())
            .field("metadata", &self.inner.metadata)
            .field("headers", &self.inner.headers)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::conn::core::Core;
    use crate::observe::metrics::Counters;

    fn connection() -> Connection {
        let metrics = Arc::new(Counters::new("server", &[1.0]));
        Connection::new(
            1,
            None,
            Core::new(Config::default(), metrics, None),
            Default::default(),
        )
    }

    fn fresh(spare: &mut Option<Spare>, conn: &Connection) -> Context {
        Context::new_in(
            spare,
            conn,
            Metadata::default(),
            Headers::new(),
            Cancel::Owner,
            None,
        )
    }

    fn written_on(ctx: &Context) {
        ctx.insert_extension(7u32);
        ctx.set_reply_header("k", "v");
        let err = prost::encoding::decode_varint(&mut &[0xff_u8][..]).expect_err("truncated");
        ctx.decode_failed(err);
    }

    fn assert_blank(ctx: &Context) {
        assert_eq!(ctx.extension::<u32>(), None);
        assert_eq!(ctx.take_reply_headers().unwrap_or_default(), Headers::new());
        assert!(ctx.take_decode_error().is_none());
    }

    #[test]
    fn a_reused_context_keeps_nothing_of_the_last_message() {
        let conn = connection();
        let mut spare = None;
        let first = fresh(&mut spare, &conn);
        let allocation = Arc::as_ptr(&first.inner);
        written_on(&first);
        // Its run ended: what the run wrote goes, the allocation stays.
        spare = Some(first.into_spare());
        let second = fresh(&mut spare, &conn);
        assert!(spare.is_none(), "taken");
        assert_eq!(Arc::as_ptr(&second.inner), allocation, "reused");
        assert!(second.connection().same(&conn));
        assert_blank(&second);
        // A clone outlived the run, so its end left the clone's data; once
        // the clone is gone, the next message reuses the memory, and still
        // sees nothing of the last one.
        written_on(&second);
        let outlived = second.clone();
        spare = Some(second.into_spare());
        assert_eq!(
            outlived.extension::<u32>(),
            Some(7),
            "the clone's data stays while it lives"
        );
        drop(outlived);
        let third = fresh(&mut spare, &conn);
        assert_eq!(Arc::as_ptr(&third.inner), allocation, "reused");
        assert_blank(&third);
        // A context something still holds is never written over.
        let held = third.clone();
        held.insert_extension(9u32);
        spare = Some(third.into_spare());
        let fourth = fresh(&mut spare, &conn);
        assert_ne!(Arc::as_ptr(&fourth.inner), allocation);
        assert_eq!(held.extension::<u32>(), Some(9));
        assert_blank(&fourth);
        // Another connection's message in the same allocation holds that connection.
        let other = connection();
        spare = Some(fourth.into_spare());
        let fifth = fresh(&mut spare, &other);
        assert!(fifth.connection().same(&other));
    }

    #[test]
    fn a_parked_spare_goes_to_the_next_context_made_on_the_thread() {
        drop(PARKED.take());
        let (conn, other) = (connection(), connection());
        let first = fresh(&mut None, &conn);
        let allocation = Arc::as_ptr(&first.inner);
        written_on(&first);
        // The reader waits: its spare is parked, cleared, on the thread,
        // holding no connection.
        first.into_spare().park();
        PARKED.with(|parked| {
            let spare = parked.take().expect("parked");
            assert!(spare.0.conn.is_none(), "the connection is let go");
            parked.set(Some(spare));
        });
        // Another connection's reader, with no spare of its own, takes it.
        let second = fresh(&mut None, &other);
        assert_eq!(Arc::as_ptr(&second.inner), allocation, "reused");
        assert!(second.connection().same(&other));
        assert_blank(&second);
        assert!(PARKED.take().is_none(), "taken, not shared");
        // A spare whose context something still holds is not parked.
        let held = second.clone();
        second.into_spare().park();
        assert!(PARKED.take().is_none());
        let third = fresh(&mut None, &conn);
        assert_ne!(Arc::as_ptr(&third.inner), allocation);
        drop(held);
    }
}
