//! Middleware: code around every handler, run in registration order, able to short-circuit; plus built-ins.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::conn::connection::Connection;
use crate::route::context::Context;
pub use crate::route::handler::BoxFuture;
use crate::route::handler::BoxHandler;
use crate::wire::control::Control;
pub use crate::wire::reply::{Encoded, Outcome};
use crate::wire::status::Status;

/// Code that runs around handlers.
///
/// The first middleware registered is the outermost: it sees the message first
/// and the outcome last. Call [`Next::run`] to continue the chain, or return
/// an [`Outcome`] without calling it to short-circuit (the handler never runs).
///
/// Panic recovery is not a middleware: it is always on, outside every
/// middleware, so even a panicking middleware yields an INTERNAL reply.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one message; `payload` is still encoded.
    fn call(&self, ctx: Context, payload: Bytes, next: Next) -> BoxFuture<Outcome>;

    /// Sees a client's pub/sub frame (SUBSCRIBE, UNSUBSCRIBE, PUBLISH,
    /// BROADCAST) on a server, before the server's policies and before it is
    /// acted on; an `Err` refuses it with that status. Only global middleware
    /// (`ServerBuilder::middleware`) is asked, in registration order. The
    /// default lets everything through; [`rate_limit`] counts these frames
    /// against the same budget as messages.
    fn control(&self, conn: &Connection, control: &Control<'_>) -> Result<(), Status> {
        let _ = (conn, control);
        Ok(())
    }
}

/// The rest of the middleware chain, ending in the handler.
#[derive(Clone)]
pub struct Next {
    stack: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    endpoint: BoxHandler,
}

impl Next {
    /// Runs the rest of the chain and the handler.
    pub fn run(self, ctx: Context, payload: Bytes) -> BoxFuture<Outcome> {
        match self.stack.get(self.index).cloned() {
            Some(mw) => {
                let next = Next {
                    index: self.index + 1,
                    ..self
                };
                mw.call(ctx, payload, next)
            }
            None => (self.endpoint)(ctx, payload),
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.stack.len() - self.index))
            .finish()
    }
}

/// Wraps `endpoint` in `stack` (outermost first).
pub(crate) fn compose(stack: &Arc<[Arc<dyn Middleware>]>, endpoint: BoxHandler) -> BoxHandler {
    if stack.is_empty() {
        return endpoint;
    }
    let stack = Arc::clone(stack);
    Arc::new(move |ctx, payload| {
        Next {
            stack: Arc::clone(&stack),
            index: 0,
            endpoint: Arc::clone(&endpoint),
        }
        .run(ctx, payload)
    })
}

/// A middleware made from an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn")
    }
}

/// Builds a middleware from `async |ctx, payload, next| -> Outcome`.
///
/// ```
/// use goomerang::{Status, middleware};
/// let auth = middleware::from_fn(|ctx, payload, next| async move {
///     if ctx.header("token") != Some("secret") {
///         return Err(Status::unauthenticated("missing token"));
///     }
///     next.run(ctx, payload).await
/// });
/// # let _ = auth;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Context, Bytes, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FromFn(f)
}

impl<F, Fut> Middleware for FromFn<F>
where
    F: Fn(Context, Bytes, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, ctx: Context, payload: Bytes, next: Next) -> BoxFuture<Outcome> {
        Box::pin((self.0)(ctx, payload, next))
    }
}

/// Logs every handled message with `tracing`: type, correlation id, connection,
/// duration and outcome. Successes at DEBUG, failures at WARN.
pub fn logging() -> Logging {
    Logging
}

/// See [`logging`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Logging;

impl Middleware for Logging {
    fn call(&self, ctx: Context, payload: Bytes, next: Next) -> BoxFuture<Outcome> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let type_name = ctx.metadata().type_name().to_owned();
            let id = ctx.metadata().correlation_id();
            let conn = ctx.connection().id();
            let size = payload.len();
            let outcome = next.run(ctx, payload).await;
            let micros = started.elapsed().as_micros() as u64;
            match &outcome {
                Ok(_) => tracing::debug!(%type_name, id, conn, size, micros, "handled"),
                Err(status) => {
                    tracing::warn!(%type_name, id, conn, size, micros, %status, "handler failed")
                }
            }
            outcome
        })
    }
}

/// Fails a handler that runs longer than `limit` with DEADLINE_EXCEEDED (the
/// handler future is dropped). Independent of the requester's own deadline,
/// which the runtime always enforces.
pub fn timeout(limit: Duration) -> Timeout {
    Timeout(limit)
}

/// See [`timeout`].
#[derive(Clone, Copy, Debug)]
pub struct Timeout(Duration);

impl Middleware for Timeout {
    fn call(&self, ctx: Context, payload: Bytes, next: Next) -> BoxFuture<Outcome> {
        let limit = self.0;
        Box::pin(async move {
            let type_name = ctx.metadata().type_name().to_owned();
            match tokio::time::timeout(limit, next.run(ctx, payload)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "handler for {type_name} exceeded its {limit:?} limit"
                ))),
            }
        })
    }
}

/// Limits each connection to `per_second` messages with bursts of `burst`
/// (a token bucket per connection). Over the limit, requests get
/// RESOURCE_EXHAUSTED (one-way messages are refused through `on_error`); a
/// connection that keeps going — more than [`RateLimit::close_after`]
/// refusals in a row, default `burst` — is closed with 1008 (policy violation).
pub fn rate_limit(per_second: f64, burst: u32) -> RateLimit {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    RateLimit {
        per_second: per_second.max(0.0),
        burst: f64::from(burst.max(1)),
        close_after: burst.max(1),
        id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

/// See [`rate_limit`].
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    close_after: u32,
    /// Which of a connection's buckets is this limiter's (several limiters,
    /// e.g. scoped ones, count separately).
    id: u64,
}

/// A connection's token buckets, one per limiter, kept in the connection's
/// data: they go when the connection goes, and the limiter holds no connection.
#[derive(Clone, Debug, Default)]
struct Buckets(std::collections::HashMap<u64, Bucket>);

#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
    strikes: u32,
}

impl RateLimit {
    /// Refusals in a row after which the connection is closed with 1008.
    pub fn close_after(mut self, strikes: u32) -> RateLimit {
        self.close_after = strikes.max(1);
        self
    }

    /// Takes a token for `conn`; `Err(strikes)` when there is none.
    fn take(&self, conn: &crate::Connection) -> Result<(), u32> {
        let now = tokio::time::Instant::now();
        conn.update_data(|buckets: &mut Buckets| {
            let bucket = buckets.0.entry(self.id).or_insert_with(|| Bucket {
                tokens: self.burst,
                last: now,
                strikes: 0,
            });
            let refill = now.duration_since(bucket.last).as_secs_f64() * self.per_second;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                bucket.strikes = 0;
                Ok(())
            } else {
                bucket.strikes += 1;
                Err(bucket.strikes)
            }
        })
    }
}

impl RateLimit {
    /// Takes a token for `conn`, or refuses (closing with 1008 after too many refusals in a row).
    fn admit(&self, conn: &Connection) -> Result<(), Status> {
        self.take(conn).map_err(|strikes| {
            if strikes > self.close_after {
                conn.start_close(1008, "rate limit exceeded");
            }
            Status::resource_exhausted(format!(
                "rate limit: {} messages per second, bursts of {}",
                self.per_second, self.burst
            ))
        })
    }
}

impl Middleware for RateLimit {
    fn call(&self, ctx: Context, payload: Bytes, next: Next) -> BoxFuture<Outcome> {
        match self.admit(ctx.connection()) {
            Ok(()) => next.run(ctx, payload),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }

    /// Pub/sub frames take tokens from the same bucket as messages.
    fn control(&self, conn: &Connection, _control: &Control<'_>) -> Result<(), Status> {
        self.admit(conn)
    }
}
