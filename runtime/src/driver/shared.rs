//! `Shared`: what the drivers of one server or client share above the connection core: routes, hooks and, on a server, the pub/sub hub.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::conn::core::Core;
use crate::conn::session::{HeldKey, Sessions};
use crate::hooks::Hooks;
use crate::pubsub::history::Positions;
use crate::pubsub::hub::Hub;
use crate::route::router::Routes;

#[derive(Debug)]
pub(crate) struct Shared {
    core: Arc<Core>,
    routes: Routes,
    hooks: Hooks,
    /// A server's pub/sub: it handles the client-to-server control frames
    /// (BROADCAST, SUBSCRIBE, UNSUBSCRIBE, PUBLISH). `None` on a client, which
    /// refuses them.
    pubsub: Option<Arc<Hub>>,
    /// A client's last position on each topic with history; `None` on a server.
    positions: Option<Arc<Positions>>,
    /// The session key a client holds; `None` on a server.
    session_key: Option<Arc<HeldKey>>,
}

impl Shared {
    pub(crate) fn new(
        routes: Routes,
        config: Config,
        hooks: Hooks,
        pubsub: Option<Arc<Hub>>,
        sessions: Option<Sessions>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            session_key: pubsub.is_none().then(Arc::default),
            core: Core::new(config, Arc::clone(hooks.metrics()), sessions),
            routes,
            hooks,
            positions: pubsub.is_none().then(Arc::default),
            pubsub,
        })
    }
}

impl Shared {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(crate) fn routes(&self) -> &Routes {
        &self.routes
    }

    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// A server's pub/sub hub; `None` on a client.
    pub(crate) fn pubsub(&self) -> Option<&Arc<Hub>> {
        self.pubsub.as_ref()
    }

    /// The session key a client holds; `None` on a server.
    pub(crate) fn session_key(&self) -> Option<&Arc<HeldKey>> {
        self.session_key.as_ref()
    }

    /// A client's positions in the topics it receives with history; `None` on a server.
    pub(crate) fn positions(&self) -> Option<&Arc<Positions>> {
        self.positions.as_ref()
    }
}

/// The core's configuration, caps and trackers read as the driver's own.
impl Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
