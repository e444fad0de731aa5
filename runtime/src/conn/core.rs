//! `Core`: what every connection of one server or client shares below routing: configuration, metrics, caps, lifecycle flags and task trackers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::conn::limit::Limit;
use crate::conn::session::Sessions;
use crate::observe::metrics::Counters;

#[derive(Debug)]
pub(crate) struct Core {
    config: Config,
    metrics: Arc<Counters>,
    /// The global handler cap: each running handler holds one slot.
    global: Arc<Limit>,
    /// Every handler task; shutdown closes it and waits for it to drain.
    handlers: TaskTracker,
    /// Every connection task (reader plus its writer); shutdown waits for it too.
    connections: TaskTracker,
    /// Set when the owner begins shutting down: requests arriving after it get
    /// UNAVAILABLE, local `request` calls fail the same way.
    shutting_down: AtomicBool,
    /// Cancelled when shutdown's deadline passes: one-way handlers (which
    /// otherwise outlive their connection) are dropped.
    abort: CancellationToken,
    /// A server's session store; `None` on a client.
    sessions: Option<Sessions>,
}

impl Core {
    pub(crate) fn new(
        config: Config,
        metrics: Arc<Counters>,
        sessions: Option<Sessions>,
    ) -> Arc<Core> {
        Arc::new(Core {
            sessions,
            global: Arc::new(Limit::new(config.max_concurrent_handlers)),
            config,
            metrics,
            handlers: TaskTracker::new(),
            connections: TaskTracker::new(),
            shutting_down: AtomicBool::new(false),
            abort: CancellationToken::new(),
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A server's session store; `None` on a client.
    pub(crate) fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_ref()
    }

    pub(crate) fn metrics(&self) -> &Arc<Counters> {
        &self.metrics
    }

    /// The global handler cap: each running handler holds one slot.
    pub(crate) fn global(&self) -> &Arc<Limit> {
        &self.global
    }

    /// Every handler task; shutdown closes it and waits for it to drain.
    pub(crate) fn handlers(&self) -> &TaskTracker {
        &self.handlers
    }

    /// Every connection task; shutdown waits for it too.
    pub(crate) fn connections(&self) -> &TaskTracker {
        &self.connections
    }

    /// Cancelled when shutdown's deadline passes.
    pub(crate) fn abort(&self) -> &CancellationToken {
        &self.abort
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn set_shutting_down(&self, value: bool) {
        self.shutting_down.store(value, Ordering::Release);
    }
}
