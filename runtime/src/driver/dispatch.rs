//! Dispatch: MESSAGE and REQUEST frames become handler runs, under the caps, inline until their first await.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::CatchUnwind;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use crate::conn::connection::{Connection, Wait};
use crate::conn::limit::{Limit, Slot};
use crate::driver::shared::Shared;
use crate::error::Error;
use crate::incident::Incident;
use crate::route::context::{Cancel, Context, Spare};
use crate::route::handler::{BoxFuture, Kind, Outcome, Route};
use crate::sync::sleep_until;
use crate::wire::frame::Incoming;
use crate::wire::message::Metadata;
use crate::wire::proto;
use crate::wire::status::Status;
use crate::wire::topic::Position;

/// What the reader carries from one frame's dispatch to the next.
pub(crate) struct Carry {
    /// The clock reading of the end of the last frame's handler, if it ended
    /// on the reader's poll: the next frame's receipt when the reader did not
    /// wait in between.
    pub(crate) ended: Option<Instant>,
    /// The context of the last handler run, if it ended on the reader's
    /// poll, for the next one to reuse; kept only while frames stream in
    /// (then parked on the thread for its next context, by any connection),
    /// so a quiet connection holds none.
    spare: Option<Spare>,
    /// The server-wide handler cap, and whether the reader holds a slot of
    /// it: held while frames stream in and no other task waits for one, the
    /// runs that end on the reader's poll use it in turn, so it is taken and
    /// given back once per burst, not twice per message (a locked
    /// instruction each, on a counter every connection shares: 4% of the
    /// one-way rate). A run that suspends takes it along, and the reader
    /// lets go of it before it waits for anything.
    global: Arc<Limit>,
    holds: bool,
}

impl Carry {
    pub(crate) fn new(global: &Arc<Limit>) -> Carry {
        Carry {
            ended: None,
            spare: None,
            global: Arc::clone(global),
            holds: false,
        }
    }

    /// The reader is about to wait for the socket: the spare context goes
    /// to this thread's next one (see [`Spare::park`]), the slot back to the cap.
    pub(crate) fn idle(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.park();
        }
        self.release_slot();
    }

    /// The reader is about to wait for something else: the slot goes back.
    pub(crate) fn release_slot(&mut self) {
        if std::mem::take(&mut self.holds) {
            self.global.release();
        }
    }

    /// Holds a slot of the server's cap, taking one if it holds none and one is free.
    fn hold(&mut self) -> bool {
        if !self.holds {
            self.holds = self.global.try_acquire();
        }
        self.holds
    }

    /// The slot held, for a run that outlasts the reader's poll.
    fn hand_over(&mut self) -> Slot {
        debug_assert!(self.holds, "the fast path holds a slot");
        self.holds = false;
        Slot::taken(&self.global)
    }
}

impl Drop for Carry {
    fn drop(&mut self) {
        self.release_slot();
    }
}

/// Turns MESSAGE and REQUEST frames into handler runs, under the concurrency caps.
pub(crate) struct Dispatcher {
    conn: Connection,
    shared: Arc<Shared>,
    /// This connection's handler cap; each running handler holds a slot.
    per_conn: Arc<Limit>,
    /// Ordered mode: the queue of the connection's single worker. Dropping it
    /// (when the reader ends) lets the worker finish what is queued and stop.
    ordered: Option<mpsc::Sender<(Job, Route)>>,
}

impl Dispatcher {
    pub(crate) fn new(conn: &Connection, shared: &Arc<Shared>) -> Dispatcher {
        let config = conn.config();
        let ordered = config.ordered.then(|| {
            let (tx, rx) = mpsc::channel(config.max_concurrent_per_connection);
            shared
                .handlers()
                .spawn(ordered_worker(rx, Arc::clone(shared)));
            tx
        });
        Dispatcher {
            conn: conn.clone(),
            shared: Arc::clone(shared),
            per_conn: Arc::new(Limit::new(config.max_concurrent_per_connection)),
            ordered,
        }
    }

    /// Starts the handler for `frame`, received at `received`, on the
    /// reader's poll (`cx`): it runs here until its first await, and what
    /// suspends becomes a task of its own. Returns what is left to wait for
    /// when a cap is full or the answer to a refused frame finds the queue
    /// full, boxed: the reader's state then carries none of it while idle.
    /// An `Err` is a protocol violation (a request id already in flight): the
    /// close code and what the peer did. A handler that ends here leaves the
    /// clock reading of its end in `carry`, for the reader to reuse, and its
    /// context's allocation, for the next handler's.
    pub(crate) fn dispatch(
        &self,
        frame: &mut Incoming,
        is_request: bool,
        received: Instant,
        carry: &mut Carry,
        cx: &mut std::task::Context<'_>,
    ) -> Result<Option<Wait<'_>>, (u16, String)> {
        match self.job(frame, is_request, received, &mut carry.spare) {
            Ok((job, route)) => Ok(self.start(job, route, received, carry, cx)),
            Err(NoJob::Handled) => Ok(None),
            Err(NoJob::Violation(code, detail)) => Err((code, detail)),
            Err(NoJob::Refused {
                status,
                type_name,
                method,
                id,
            }) => Ok(if is_request {
                self.conn.answer_now(id, Err(status))
            } else {
                self.conn.report_now(&status, &type_name, &method)
            }),
        }
    }

    fn start(
        &self,
        job: Job,
        route: &Route,
        received: Instant,
        carry: &mut Carry,
        cx: &mut std::task::Context<'_>,
    ) -> Option<Wait<'_>> {
        let shared = &self.shared;
        if let Some(queue) = &self.ordered {
            let Err(mpsc::error::TrySendError::Full(job)) = queue.try_send((job, route.clone()))
            else {
                return None;
            };
            self.conn.writer().reader_waits();
            // Borrowed, not cloned: cloning a token takes its lock, once per message.
            let kill = self.conn.kill_token();
            return Some(Box::pin(async move {
                tokio::select! {
                    _ = kill.cancelled() => {}
                    _ = queue.send(job) => {}
                }
            }));
        }
        // Fast path: with room under both caps, run the handler here until its
        // first await; only work that suspends becomes a task of its own. The
        // reader alone takes this connection's slots, so it takes one only
        // for work that outlasts its poll; of the server's, it holds one
        // while frames stream in (see `Carry::global`).
        if self.per_conn.has_room() && carry.hold() {
            // Shared and the route are borrowed here; only work that
            // suspends takes them along, as clones.
            let mut run = job.start(shared, route, received);
            match run.handler.poll_unpin(cx) {
                Poll::Ready(result) => {
                    let ended = &mut carry.ended;
                    match run.finish_now(shared, route, Some(result), ended) {
                        // Kept for the next frame, unless another task waits for it.
                        None => {
                            if shared.global().has_waiters() {
                                carry.release_slot();
                            }
                        }
                        // The reply waits for room in a task that keeps the
                        // handler's slots, so a stalled peer still meets the caps.
                        Some(wait) => self.spawn_holding_slots(wait, carry),
                    }
                    // The run is over: its context is the next one's.
                    carry.spare = Some(run.into_spare());
                }
                Poll::Pending => {
                    let (shared, route) = (Arc::clone(shared), route.clone());
                    let work = async move { run.complete(&shared, &route).await };
                    self.spawn_holding_slots(work, carry);
                }
            }
            return None;
        }
        // What handlers queued goes out while the reader waits for room.
        self.conn.writer().reader_waits();
        let kill = self.conn.kill_token();
        let per_conn = &self.per_conn;
        let route = route.clone();
        Some(Box::pin(async move {
            let slots = async {
                let local = Slot::acquire(per_conn).await;
                (local, Slot::acquire(shared.global()).await)
            };
            let slots = tokio::select! {
                _ = kill.cancelled() => return,
                slots = slots => slots,
            };
            let owned = Arc::clone(shared);
            shared.handlers().spawn(async move {
                let _slots = slots;
                let run = job.start(&owned, &route, Instant::now());
                run.complete(&owned, &route).await;
            });
        }))
    }

    /// Runs `work` as a task that holds a slot of this connection's cap
    /// (taken now: the reader saw it free) and the server's slot the reader held.
    fn spawn_holding_slots(
        &self,
        work: impl Future<Output = ()> + Send + 'static,
        carry: &mut Carry,
    ) {
        let shared = &self.shared;
        self.per_conn.take_seen();
        let slots = (Slot::taken(&self.per_conn), carry.hand_over());
        shared.handlers().spawn(async move {
            let _slots = slots;
            work.await;
        });
    }

    /// Finds the route for `frame` and builds the handler's context (a
    /// request's deadline counts from `received`), or says why there is no
    /// handler run (the caller answers a refusal).
    fn job(
        &self,
        frame: &mut Incoming,
        is_request: bool,
        received: Instant,
        spare: &mut Option<Spare>,
    ) -> Result<(Job, &Route), NoJob> {
        let conn = &self.conn;
        let shared = &self.shared;
        let id = frame.id;
        let refuse = |status: Status, frame: &Incoming| NoJob::Refused {
            status,
            type_name: frame.type_name.to_string(),
            method: frame.method.to_string(),
            id,
        };
        if let Some(held) = shared.session_key()
            && !is_request
            && !frame.has_method()
            && frame.type_bytes() == b"goomerang.v1.Session"
        {
            // The server gives (or takes back) this client's session key:
            // the runtime's own business, never an application handler's.
            if let Ok(session) = <proto::Session as prost::Message>::decode(&frame.payload[..]) {
                held.set((!session.key.is_empty()).then_some(session.key));
            }
            return Err(NoJob::Handled);
        }
        // Found by the names as received. A name equal to a registered one
        // (the type, for a route found by type; the method, and the type if
        // it is the method's input, for a route found by method) needs no
        // UTF-8 check, and the route's copy of it holds no part of the
        // frame (the type's is static). Any other name is checked now,
        // before anything reports it.
        let by_type = !frame.has_method();
        let found = if by_type {
            shared.routes().by_type(frame.type_bytes())
        } else {
            shared.routes().by_method(frame.method_bytes())
        };
        // Whether the frame carries the route's input type (always, for a
        // route found by type).
        let typed = match found {
            Some(route) if by_type => {
                frame.type_name = route.input_name.clone();
                true
            }
            Some(route) if route.input_name.as_bytes() == frame.type_bytes() => {
                frame.type_name = route.input_name.clone();
                frame.method = route.method_name.clone();
                true
            }
            _ => {
                frame.check_names().map_err(|err| {
                    let (code, detail) = undecodable(err);
                    NoJob::Violation(code, detail)
                })?;
                false
            }
        };
        if shared.is_shutting_down() {
            // New work is refused so the drain ends; the peer is told either way.
            return Err(refuse(Error::ShuttingDown.into(), frame));
        }
        let Some(route) = found else {
            let unknown = shared.metrics().unknown_route();
            unknown.received();
            let err = Incident::UnknownRoute {
                type_name: frame.type_name.to_string(),
                method: frame.method.to_string(),
            };
            shared.hooks().error(&err, Some(conn));
            let ambiguous = frame
                .method
                .is_empty()
                .then(|| shared.routes().ambiguous(&frame.type_name))
                .flatten();
            let status = match ambiguous {
                Some(methods) => Status::unimplemented(format!(
                    "{err}: methods {} all take it; name the method",
                    methods.join(", ")
                )),
                None => Status::unimplemented(err.to_string()),
            };
            return Err(refuse(status, frame));
        };
        if !typed {
            let status = Status::invalid_argument(format!(
                "method {:?} takes {}, not {:?}",
                frame.method.as_str(),
                route.input,
                frame.type_name.as_str()
            ));
            return Err(refuse(status, frame));
        }
        route.stats.received();
        let (cancel, seq) = if is_request {
            // Cancelled by CANCEL, or by `finish` when the connection ends.
            if conn.is_closed() {
                return Err(NoJob::Handled);
            }
            let Some(seq) = conn.register_inflight(id) else {
                return Err(NoJob::Violation(
                    1002,
                    format!("REQUEST id {id} reuses the id of a request still in flight"),
                ));
            };
            (Cancel::request(id, seq), seq)
        } else {
            // One-way work outlives its connection (nothing is lost when the
            // peer closes right after sending); only a shutdown deadline stops it.
            (Cancel::Owner, 0)
        };
        let deadline = (is_request && frame.timeout_ms > 0)
            .then(|| received + Duration::from_millis(u64::from(frame.timeout_ms)));
        let position = (frame.offset != 0)
            .then(|| Position::new(std::mem::take(&mut frame.epoch), frame.offset));
        if let (Some(position), Some(positions)) = (&position, shared.positions())
            && !frame.topic.is_empty()
        {
            // A client remembers it, to recover from it after reconnecting.
            positions.record(&frame.topic, position.clone());
        }
        let metadata = Metadata {
            size: frame.payload.len(),
            type_name: std::mem::take(&mut frame.type_name),
            id,
            created_unix_us: frame.created_unix_us,
            topic: (!frame.topic.is_empty()).then_some(std::mem::take(&mut frame.topic)),
            method: std::mem::take(&mut frame.method),
            position,
        };
        let job = Job {
            ctx: Context::new_in(
                spare,
                conn,
                metadata,
                std::mem::take(&mut frame.headers),
                cancel,
                deadline,
            ),
            payload: std::mem::take(&mut frame.payload),
            is_request,
            seq,
        };
        Ok((job, route))
    }
}

/// The close code and reason for a frame that does not decode, wherever it is found out.
pub(crate) fn undecodable(err: String) -> (u16, String) {
    (1007, format!("undecodable frame: {err}"))
}

/// Why a frame does not become a handler run.
enum NoJob {
    /// Nothing more to do (the runtime's own message, or the connection closed).
    Handled,
    /// A protocol violation: the close code and what the peer did.
    Violation(u16, String),
    /// No handler can take it: the peer is told `status`.
    Refused {
        status: Status,
        type_name: String,
        method: String,
        id: u64,
    },
}

async fn ordered_worker(mut queue: mpsc::Receiver<(Job, Route)>, shared: Arc<Shared>) {
    while let Some((job, route)) = queue.recv().await {
        let _slot = Slot::acquire(shared.global()).await;
        let run = job.start(&shared, &route, Instant::now());
        run.complete(&shared, &route).await;
    }
}

/// A handler run not started yet: its context and the still-encoded payload.
pub(crate) struct Job {
    ctx: Context,
    payload: Bytes,
    is_request: bool,
    /// A request's entry among the connection's requests in flight.
    seq: u64,
}

type Panic = Box<dyn Any + Send>;

/// The handler's future as the runtime polls it: panics caught, inside its span.
type Handler = Instrumented<CatchUnwind<AssertUnwindSafe<BoxFuture<Outcome>>>>;

impl Job {
    /// Calls `route`'s handler (its body runs on the first poll) and counts it running.
    fn start(self, shared: &Shared, route: &Route, started: Instant) -> Run {
        let Job {
            ctx,
            payload,
            is_request,
            seq,
        } = self;
        let observed = ctx.clone();
        let conn = observed.connection();
        let hooks = &shared.hooks();
        if hooks.has_handler_hooks() {
            hooks.handler_start(&observed);
        }
        hooks.metrics().handler_started();
        let span = tracing::debug_span!(
            "goomerang.handle",
            r#type = %observed.metadata().type_name(),
            method = observed.metadata().method(),
            id = observed.metadata().correlation_id(),
            conn = conn.id(),
            traceparent = observed.header("traceparent"),
        );
        // Calling the handler runs middleware and the handler's code up to
        // its future: a panic there is caught too, and raised again from the
        // future's first poll, so every panic ends the run the same way.
        let call = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| (route.handler)(ctx, payload)))
        };
        let future = call.unwrap_or_else(|panic| Box::pin(raise(panic)));
        let handler = AssertUnwindSafe(future).catch_unwind().instrument(span);
        Run {
            ctx: Some(observed),
            handler,
            started,
            is_request,
            seq,
        }
    }
}

/// A started handler run. Dropping it (cancellation, shutdown) drops the
/// handler. The owner's shared state and the route are passed in, not held:
/// borrowed on the reader's poll, owned by the task of work that suspends.
struct Run {
    /// Taken only by [`into_spare`](Self::into_spare), which ends the run.
    ctx: Option<Context>,
    handler: Handler,
    started: Instant,
    is_request: bool,
    seq: u64,
}

impl Run {
    fn ctx(&self) -> &Context {
        self.ctx
            .as_ref()
            .expect("a run holds its context until it ends")
    }

    /// Ends a run whose handler is done, handing back its context as the
    /// spare for the next message (see [`Spare`]).
    fn into_spare(mut self) -> Spare {
        let ctx = self
            .ctx
            .take()
            .expect("a run holds its context until it ends");
        ctx.connection().metrics().handler_ended();
        ctx.into_spare()
    }

    /// Polls the handler to its end, unless its work is cancelled or its deadline passes first.
    async fn complete(mut self, shared: &Shared, route: &Route) {
        // A handler that finishes on its first poll never registers for cancellation.
        let result = match futures_util::poll!(&mut self.handler) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => {
                let ctx = self
                    .ctx
                    .as_ref()
                    .expect("a run holds its context until it ends");
                tokio::select! {
                    biased;
                    _ = ctx.cancel().cancelled(ctx.connection()) => None,
                    _ = sleep_until(ctx.deadline()) => None,
                    result = &mut self.handler => Some(result),
                }
            }
        };
        if let Some((id, outcome)) = self.finish(shared, route, result, Instant::now()) {
            self.ctx().connection().reply(id, outcome).await;
        }
    }

    /// [`finish`](Self::finish) for a handler that ended on the reader's
    /// poll: the reply is queued without waiting, to keep the fast path fast.
    /// With the queue full, returns the wait for room for the caller to run as
    /// a task holding the handler's slots (see the backpressure guide for when
    /// the reader itself waits). The clock reading of its end goes to `ended`.
    fn finish_now(
        &mut self,
        shared: &Shared,
        route: &Route,
        result: Option<Result<Outcome, Panic>>,
        ended: &mut Option<Instant>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let now = Instant::now();
        *ended = Some(now);
        let (id, outcome) = self.finish(shared, route, result, now)?;
        let conn = self.ctx().connection();
        let bytes = conn.try_reply(id, outcome)?;
        let conn = conn.clone();
        Some(async move {
            if let Err(err) = conn.enqueue(bytes).await {
                tracing::debug!(conn = conn.id(), id, %err, "reply not sent");
            }
        })
    }

    /// Records how the handler ended; returns the answer to send for a request.
    /// `None` means it was stopped (CANCEL, deadline, connection end). It
    /// ended at `now`.
    fn finish(
        &mut self,
        shared: &Shared,
        route: &Route,
        result: Option<Result<Outcome, Panic>>,
        now: Instant,
    ) -> Option<(u64, Outcome)> {
        let conn = self.ctx().connection();
        let hooks = shared.hooks();
        let id = self.ctx().metadata().correlation_id();
        // A request the peer cancelled (CANCEL took it off the in-flight
        // table) gets no answer, even if its handler finished meanwhile.
        let answer = self.is_request && conn.remove_inflight(id, self.seq);
        if answer {
            // Out of the table: nothing cancels it any more.
            self.ctx().cancel().finished();
        }
        let type_name = || self.ctx().metadata().type_name().to_owned();
        let method = || {
            let metadata = self.ctx().metadata();
            metadata.method().unwrap_or_default().to_owned()
        };
        let outcome = match (result, answer || !self.is_request) {
            (_, false) => None,
            (result, true) => result,
        };
        let outcome = match outcome {
            None => {
                // Whatever stopped it, make sure everything watching the context learns of it.
                self.ctx().cancel().cancel(conn);
                tracing::debug!(conn = conn.id(), id, type_name = %type_name(), "handler cancelled");
                return None;
            }
            Some(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                let err = Incident::HandlerPanicked {
                    type_name: type_name(),
                    method: method(),
                    message: message.clone(),
                };
                hooks.error(&err, Some(conn));
                Err(Status::internal(format!(
                    "handler for {} panicked: {message}",
                    type_name()
                )))
            }
            Some(Ok(outcome)) => outcome,
        };
        let decode_error = self.ctx().take_decode_error();
        let decode_failed = decode_error.is_some();
        if let Some(source) = decode_error {
            // Reported as a decode error, not as the handler's failure; the
            // sender of a one-way message is told (a request's answer tells it).
            let err = Incident::Decode {
                type_name: type_name(),
                source,
            };
            hooks.error(&err, Some(conn));
            if !self.is_request
                && let Err(status) = &outcome
            {
                let metadata = self.ctx().metadata();
                conn.queue_report(status, &metadata.type_name, &metadata.method);
            }
        }
        let took = now.saturating_duration_since(self.started);
        route.stats.handled(took);
        if hooks.has_handler_hooks() {
            hooks.handler_end(self.ctx(), outcome.as_ref().map(drop), took);
        }
        if self.is_request {
            let outcome = match outcome {
                Ok(None) if route.kind == Kind::OneWay => Err(Status::unimplemented(format!(
                    "the handler for {} is one-way and sends no reply",
                    type_name()
                ))),
                Ok(Some(mut reply)) => {
                    if let Some(headers) = self.ctx().take_reply_headers() {
                        // Headers middleware put on the reply win over the handler's.
                        for (key, value) in headers {
                            reply.headers.entry(key).or_insert(value);
                        }
                    }
                    Ok(Some(reply))
                }
                other => other,
            };
            return Some((id, outcome));
        }
        if let Err(status) = outcome
            && !decode_failed
        {
            let err = Incident::Handler {
                type_name: type_name(),
                method: method(),
                status,
            };
            hooks.error(&err, Some(conn));
        }
        None
    }
}

impl Drop for Run {
    /// Counts the run out of `goomerang_handlers_in_flight`, however it ended.
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            ctx.connection().metrics().handler_ended();
        }
    }
}

/// A handler's future that raises `panic` (caught while calling the handler) when polled.
async fn raise(panic: Panic) -> Outcome {
    std::panic::resume_unwind(panic)
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
