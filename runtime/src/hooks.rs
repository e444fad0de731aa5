//! Hooks: user callbacks for lifecycle events (state changes, connect/disconnect, errors).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use std::time::Duration;

use crate::conn::close::CloseInfo;
use crate::conn::connection::Connection;
use crate::error::BuildError;
use crate::incident::Incident;
use crate::observe::metrics::{Counters, DEFAULT_BUCKETS};
use crate::route::context::Context;
use crate::state::State;
use crate::wire::status::Status;
use crate::wire::topic::Subscription;

type ErrorHook = Arc<dyn Fn(&Incident, Option<&Connection>) + Send + Sync>;
type ConnHook = Arc<dyn Fn(&Connection) + Send + Sync>;
type CloseHook = Arc<dyn Fn(&Connection, &CloseInfo) + Send + Sync>;
type StateHook = Arc<dyn Fn(State) + Send + Sync>;
type StartHook = Arc<dyn Fn(&Context) + Send + Sync>;
type EndHook = Arc<dyn Fn(&Context, Result<(), &Status>, Duration) + Send + Sync>;
type BroadcastHook = Arc<dyn Fn(&str, usize) + Send + Sync>;
type PublishHook = Arc<dyn Fn(&str, &str, usize) + Send + Sync>;
type SubscriptionHook = Arc<dyn Fn(&Connection, &Subscription) + Send + Sync>;

/// The callbacks registered on a server or client builder. A panicking hook is
/// caught and logged; it never takes a connection down.
#[derive(Clone)]
pub(crate) struct Hooks {
    /// Counters fed by the same events the hooks see.
    metrics: Arc<Counters>,
    error: Vec<ErrorHook>,
    connect: Vec<ConnHook>,
    disconnect: Vec<CloseHook>,
    state: Vec<StateHook>,
    handler_start: Vec<StartHook>,
    handler_end: Vec<EndHook>,
    broadcast: Vec<BroadcastHook>,
    publish: Vec<PublishHook>,
    subscribe: Vec<SubscriptionHook>,
    unsubscribe: Vec<SubscriptionHook>,
    /// Histogram bounds asked for with `metrics_buckets`, checked by [`finish`](Self::finish).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    buckets: Option<Vec<f64>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("error", &self.error.len())
            .field("connect", &self.connect.len())
            .field("disconnect", &self.disconnect.len())
            .field("state", &self.state.len())
            .field("handler_start", &self.handler_start.len())
            .field("handler_end", &self.handler_end.len())
            .field("broadcast", &self.broadcast.len())
            .field("publish", &self.publish.len())
            .field("subscribe", &self.subscribe.len())
            .field("unsubscribe", &self.unsubscribe.len())
            .finish()
    }
}

fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!(
            hook = what,
            "a goomerang hook panicked; the panic was contained"
        );
    }
}

impl Hooks {
    pub(crate) fn new(side: &'static str) -> Hooks {
        Hooks {
            metrics: Arc::new(Counters::new(side, &DEFAULT_BUCKETS)),
            error: Vec::new(),
            connect: Vec::new(),
            disconnect: Vec::new(),
            state: Vec::new(),
            handler_start: Vec::new(),
            handler_end: Vec::new(),
            broadcast: Vec::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
            buckets: None,
        }
    }

    /// The counters fed by the same events the hooks see.
    pub(crate) fn metrics(&self) -> &Arc<Counters> {
        &self.metrics
    }

    /// Sets the latency histograms' upper bounds (seconds), checked at build time.
    #[cfg(feature = "metrics")]
    pub(crate) fn set_buckets(&mut self, bounds: Vec<f64>) {
        self.buckets = Some(bounds);
    }

    /// Checks the settings and makes the counters with the chosen buckets.
    pub(crate) fn finish(mut self) -> Result<Hooks, BuildError> {
        if let Some(bounds) = self.buckets.take() {
            let reason = if bounds.is_empty() {
                Some("no bucket given")
            } else if bounds.iter().any(|b| !b.is_finite() || *b <= 0.0) {
                Some("every bound must be a finite number of seconds above zero")
            } else if bounds.windows(2).any(|w| w[0] >= w[1]) {
                Some("bounds must be strictly increasing")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(BuildError::InvalidBuckets { bounds, reason });
            }
            self.metrics = Arc::new(Counters::new(self.metrics.side(), &bounds));
        }
        Ok(self)
    }

    pub(crate) fn error(&self, err: &Incident, conn: Option<&Connection>) {
        tracing::debug!(error = %err, conn = conn.map(Connection::id), "goomerang error");
        self.metrics.error(err.kind());
        if let Incident::SlowConsumer { disconnected, .. } = err {
            self.metrics.slow_consumer(*disconnected);
        }
        for hook in &self.error {
            guarded("on_error", || hook(err, conn));
        }
    }

    pub(crate) fn connect(&self, conn: &Connection) {
        self.metrics.connection_opened();
        for hook in &self.connect {
            guarded("on_connect", || hook(conn));
        }
    }

    pub(crate) fn disconnect(&self, conn: &Connection, info: &CloseInfo) {
        self.metrics.connection_closed();
        for hook in &self.disconnect {
            guarded("on_disconnect", || hook(conn, info));
        }
    }

    pub(crate) fn state(&self, state: State) {
        let value = match state {
            State::New => 0,
            State::Running => 1,
            State::Closing => 2,
            _ => 3,
        };
        self.metrics.set_state(value);
        for hook in &self.state {
            guarded("on_state_change", || hook(state));
        }
    }

    pub(crate) fn has_handler_hooks(&self) -> bool {
        !self.handler_start.is_empty() || !self.handler_end.is_empty()
    }

    pub(crate) fn handler_start(&self, ctx: &Context) {
        for hook in &self.handler_start {
            guarded("on_handler_start", || hook(ctx));
        }
    }

    pub(crate) fn handler_end(&self, ctx: &Context, outcome: Result<(), &Status>, took: Duration) {
        for hook in &self.handler_end {
            guarded("on_handler_end", || hook(ctx, outcome, took));
        }
    }

    pub(crate) fn broadcast(&self, type_name: &str, recipients: usize) {
        for hook in &self.broadcast {
            guarded("on_broadcast", || hook(type_name, recipients));
        }
    }

    /// A client's pub/sub frame was refused (by middleware or a policy).
    pub(crate) fn refused(&self, action: &'static str) {
        self.metrics.refused(action);
    }

    pub(crate) fn publish(&self, topic: &str, type_name: &str, recipients: usize) {
        self.metrics.published();
        for hook in &self.publish {
            guarded("on_publish", || hook(topic, type_name, recipients));
        }
    }

    pub(crate) fn subscribe(&self, conn: &Connection, sub: &Subscription, added: bool) {
        self.metrics.subscribed(added);
        let hooks = if added {
            &self.subscribe
        } else {
            &self.unsubscribe
        };
        for hook in hooks {
            guarded("on_subscribe/on_unsubscribe", || hook(conn, sub));
        }
    }
}

/// Registration, one method per hook kind (the builders' `on_*` methods call them).
macro_rules! adders {
    ($($add:ident: $field:ident($hook:ty)),* $(,)?) => {
        impl Hooks {
            $(
                pub(crate) fn $add(&mut self, hook: $hook) {
                    self.$field.push(hook);
                }
            )*
        }
    };
}

adders! {
    add_error: error(ErrorHook),
    add_connect: connect(ConnHook),
    add_disconnect: disconnect(CloseHook),
    add_state: state(StateHook),
    add_handler_start: handler_start(StartHook),
    add_handler_end: handler_end(EndHook),
    add_broadcast: broadcast(BroadcastHook),
    add_publish: publish(PublishHook),
    add_subscribe: subscribe(SubscriptionHook),
    add_unsubscribe: unsubscribe(SubscriptionHook),
}

/// Adds the hook-registration methods to a builder with a `hooks: Hooks` field.
macro_rules! hook_methods {
    () => {
        /// The upper bounds, in seconds, of the latency histograms
        /// (`goomerang_handler_duration_seconds`,
        /// `goomerang_request_duration_seconds`,
        /// `goomerang_broadcast_duration_seconds`); +Inf is implied. The
        /// default runs from 50 µs to 1 s. `build` refuses bounds that are
        /// empty, not strictly increasing, or not finite and above zero
        /// ([`BuildError::InvalidBuckets`]($crate::BuildError::InvalidBuckets)).
        #[cfg(feature = "metrics")]
        pub fn metrics_buckets(mut self, bounds: impl IntoIterator<Item = f64>) -> Self {
            self.hooks.set_buckets(bounds.into_iter().collect());
            self
        }

        /// Called for every [`Incident`]($crate::Incident): what goes wrong away
        /// from any call (bad input from a peer, failed or panicking one-way
        /// handlers, unknown reply ids, transport errors, slow consumers).
        /// The connection is given when the incident belongs to one. Errors of
        /// your own calls are returned to you instead, never reported here.
        pub fn on_error(
            mut self,
            hook: impl Fn(&$crate::Incident, Option<&$crate::Connection>) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.add_error(std::sync::Arc::new(hook));
            self
        }

        /// Called when a connection is established, before its first message is handled.
        pub fn on_connect(
            mut self,
            hook: impl Fn(&$crate::Connection) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.add_connect(std::sync::Arc::new(hook));
            self
        }

        /// Called when a connection has ended, with its close code, reason and who closed it.
        pub fn on_disconnect(
            mut self,
            hook: impl Fn(&$crate::Connection, &$crate::CloseInfo) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.add_disconnect(std::sync::Arc::new(hook));
            self
        }

        /// Called on every lifecycle transition (NEW → RUNNING → CLOSING → CLOSED).
        pub fn on_state_change(
            mut self,
            hook: impl Fn($crate::State) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.add_state(std::sync::Arc::new(hook));
            self
        }

        /// Called when a handler starts, before any middleware.
        pub fn on_handler_start(
            mut self,
            hook: impl Fn(&$crate::Context) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.add_handler_start(std::sync::Arc::new(hook));
            self
        }

        /// Called when a handler has finished (not when it was cancelled),
        /// with its outcome and how long it took.
        pub fn on_handler_end(
            mut self,
            hook: impl Fn(&$crate::Context, Result<(), &$crate::Status>, std::time::Duration)
            + Send
            + Sync
            + 'static,
        ) -> Self {
            self.hooks.add_handler_end(std::sync::Arc::new(hook));
            self
        }
    };
}
pub(crate) use hook_methods;
