//! Hooks: user callbacks for lifecycle events (state changes, connect/disconnect, errors).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::connection::{CloseInfo, Connection};
use crate::error::Error;
use crate::state::State;

type ErrorHook = Arc<dyn Fn(&Error, Option<&Connection>) + Send + Sync>;
type ConnHook = Arc<dyn Fn(&Connection) + Send + Sync>;
type CloseHook = Arc<dyn Fn(&Connection, &CloseInfo) + Send + Sync>;
type StateHook = Arc<dyn Fn(State) + Send + Sync>;

/// The callbacks registered on a server or client builder. A panicking hook is
/// caught and logged; it never takes a connection down.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) error: Vec<ErrorHook>,
    pub(crate) connect: Vec<ConnHook>,
    pub(crate) disconnect: Vec<CloseHook>,
    pub(crate) state: Vec<StateHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("error", &self.error.len())
            .field("connect", &self.connect.len())
            .field("disconnect", &self.disconnect.len())
            .field("state", &self.state.len())
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
    pub(crate) fn error(&self, err: &Error, conn: Option<&Connection>) {
        tracing::debug!(error = %err, conn = conn.map(Connection::id), "goomerang error");
        for hook in &self.error {
            guarded("on_error", || hook(err, conn));
        }
    }

    pub(crate) fn connect(&self, conn: &Connection) {
        for hook in &self.connect {
            guarded("on_connect", || hook(conn));
        }
    }

    pub(crate) fn disconnect(&self, conn: &Connection, info: &CloseInfo) {
        for hook in &self.disconnect {
            guarded("on_disconnect", || hook(conn, info));
        }
    }

    pub(crate) fn state(&self, state: State) {
        for hook in &self.state {
            guarded("on_state_change", || hook(state));
        }
    }
}

/// Adds the hook-registration methods to a builder with a `hooks: Hooks` field.
macro_rules! hook_methods {
    () => {
        /// Called for every error the runtime reports: bad input from a peer,
        /// failed or panicking handlers, unknown reply ids, transport errors.
        /// The connection is given when the error belongs to one.
        pub fn on_error(
            mut self,
            hook: impl Fn(&$crate::Error, Option<&$crate::Connection>) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.error.push(std::sync::Arc::new(hook));
            self
        }

        /// Called when a connection is established, before its first message is handled.
        pub fn on_connect(
            mut self,
            hook: impl Fn(&$crate::Connection) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.connect.push(std::sync::Arc::new(hook));
            self
        }

        /// Called when a connection has ended, with its close code, reason and who closed it.
        pub fn on_disconnect(
            mut self,
            hook: impl Fn(&$crate::Connection, &$crate::CloseInfo) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.disconnect.push(std::sync::Arc::new(hook));
            self
        }

        /// Called on every lifecycle transition (NEW → RUNNING → CLOSING → CLOSED).
        pub fn on_state_change(
            mut self,
            hook: impl Fn($crate::State) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.state.push(std::sync::Arc::new(hook));
            self
        }
    };
}
pub(crate) use hook_methods;
