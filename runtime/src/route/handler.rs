//! Handlers: typed async fns adapted to one type-erased shape, `(Context, Bytes) -> Outcome`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::route::context::Context;
use crate::wire::message::{Payload, TypeName};
pub(crate) use crate::wire::reply::{Encoded, Outcome};
use crate::wire::status::Status;

/// A boxed, sendable future, as middleware returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased handler: decodes, runs the user's function, encodes the reply.
pub(crate) type BoxHandler = Arc<dyn Fn(Context, Bytes) -> BoxFuture<Outcome> + Send + Sync>;

/// Whether a handler answers requests or only consumes one-way messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    OneWay,
    Request,
}

/// A registered handler with its kind.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) kind: Kind,
    /// The payload type it takes; a method call carrying another type is refused.
    pub(crate) input: TypeName,
    /// `input`'s full name, static: what a received message's metadata holds.
    pub(crate) input_name: tokio_tungstenite::tungstenite::Utf8Bytes,
    /// The method it is found by (empty for a type route): shared by the
    /// metadata of every message routed by it, instead of its bytes in the frame.
    pub(crate) method_name: tokio_tungstenite::tungstenite::Utf8Bytes,
    pub(crate) handler: BoxHandler,
    /// This type's counters, looked up once at start-up.
    pub(crate) stats: std::sync::Arc<crate::observe::metrics::RouteStats>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route").field("kind", &self.kind).finish()
    }
}

/// What a one-way handler may return: `()` or `Result<(), Status>`. An error
/// is reported through the `on_error` hook.
pub trait IntoOneWay: Send + 'static {
    /// Converts to the result the runtime reports.
    fn into_result(self) -> Result<(), Status>;
}

impl IntoOneWay for () {
    fn into_result(self) -> Result<(), Status> {
        Ok(())
    }
}

impl IntoOneWay for Result<(), Status> {
    fn into_result(self) -> Result<(), Status> {
        self
    }
}

/// Decodes the payload; a failure is recorded on the context (the runtime
/// reports it as a decode error, to the sender of a one-way message too) and
/// becomes the INVALID_ARGUMENT the middleware sees.
fn decode<M: Payload>(ctx: &Context, payload: Bytes) -> Result<M, Status> {
    M::decode(payload).map_err(|err| {
        let status = Status::invalid_argument(format!(
            "payload does not decode as {}: {err}",
            TypeName::of::<M>()
        ));
        ctx.decode_failed(err);
        status
    })
}

pub(crate) fn one_way<M, F, Fut>(f: F) -> BoxHandler
where
    M: Payload,
    F: Fn(Context, M) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOneWay,
{
    // The payload is decoded and `f` called right here, so the future holds
    // what `f` returned, not a clone of `f`: the runtime makes this call
    // under its panic guard, just before it first polls the future.
    Arc::new(move |ctx, payload| match decode::<M>(&ctx, payload) {
        Ok(msg) => {
            let run = f(ctx, msg);
            Box::pin(async move { run.await.into_result().map(|()| None) })
        }
        Err(status) => Box::pin(std::future::ready(Err(status))),
    })
}

pub(crate) fn request<M, R, F, Fut>(f: F) -> BoxHandler
where
    M: Payload,
    R: Payload,
    F: Fn(Context, M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Status>> + Send + 'static,
{
    // As in `one_way`: decoded and called here.
    Arc::new(move |ctx, payload| match decode::<M>(&ctx, payload) {
        Ok(msg) => {
            let run = f(ctx, msg);
            Box::pin(async move { Ok(Some(Encoded::new(&run.await?))) })
        }
        Err(status) => Box::pin(std::future::ready(Err(status))),
    })
}
