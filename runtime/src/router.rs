//! `Router`: handlers keyed by message type plus the middleware around them, as the builders collect them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context::Context;
use crate::handler::{self, BoxHandler, IntoOneWay, Kind, Route};
use crate::message::{Payload, TypeName};
use crate::middleware::{self, Middleware};
use crate::status::Status;

/// Handlers and middleware for one server or client.
///
/// Usually used through the same-named methods on
/// [`ServerBuilder`](crate::ServerBuilder) and [`ClientBuilder`](crate::ClientBuilder);
/// generated service wrappers implement [`Service`] to add their methods here.
#[derive(Default)]
pub struct Router {
    routes: HashMap<String, Pending>,
    middleware: Vec<Arc<dyn Middleware>>,
}

/// A handler as registered, before middleware and metrics are attached.
struct Pending {
    kind: Kind,
    handler: BoxHandler,
}

/// Something that registers a group of handlers: what generated `*Server`
/// wrappers implement.
pub trait Service {
    /// Adds this service's handlers to `router`.
    fn register(self, router: Router) -> Router;
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers a handler for one-way messages of type `M`.
    ///
    /// # Panics
    /// If a handler for `M` is already registered (a start-up programming error).
    pub fn message<M, F, Fut>(self, handler: F) -> Router
    where
        M: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoOneWay,
    {
        self.route(
            TypeName::of::<M>().to_string(),
            Kind::OneWay,
            handler::one_way(handler),
        )
    }

    /// Registers a handler answering requests of type `M` with `R`.
    ///
    /// # Panics
    /// If a handler for `M` is already registered (a start-up programming error).
    pub fn request<M, R, F, Fut>(self, handler: F) -> Router
    where
        M: Payload,
        R: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
    {
        self.route(
            TypeName::of::<M>().to_string(),
            Kind::Request,
            handler::request(handler),
        )
    }

    /// Adds a middleware around every handler (registered before or after it).
    /// The first one added runs outermost.
    pub fn middleware(mut self, middleware: impl Middleware) -> Router {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Adds a group of handlers, e.g. a generated service wrapper.
    pub fn service(self, service: impl Service) -> Router {
        service.register(self)
    }

    fn route(mut self, type_name: String, kind: Kind, handler: BoxHandler) -> Router {
        assert!(
            !self.routes.contains_key(&type_name),
            "goomerang: a handler for message type {type_name:?} is already registered"
        );
        self.routes.insert(type_name, Pending { kind, handler });
        self
    }

    /// Wraps every handler in the middleware chain; the result is immutable.
    pub(crate) fn finish(self, metrics: &crate::metrics::Metrics) -> Routes {
        let stack: Arc<[Arc<dyn Middleware>]> = self.middleware.into();
        let routes = self
            .routes
            .into_iter()
            .map(|(name, pending)| {
                let route = Route {
                    kind: pending.kind,
                    handler: middleware::compose(&stack, pending.handler),
                    stats: metrics.type_stats(&name),
                };
                (name, route)
            })
            .collect();
        Routes(routes)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("types", &self.routes.keys().collect::<Vec<_>>())
            .field("middleware", &self.middleware.len())
            .finish()
    }
}

/// The finished, read-only routing table.
#[derive(Debug, Default)]
pub(crate) struct Routes(HashMap<String, Route>);

impl Routes {
    pub(crate) fn get(&self, type_name: &str) -> Option<&Route> {
        self.0.get(type_name)
    }
}

/// Adds the routing methods to a builder with a `router: Router` field.
macro_rules! routing_methods {
    () => {
        /// Registers a handler for one-way messages of type `M`; see [`Router::message`](crate::Router::message).
        ///
        /// # Panics
        /// If a handler for `M` is already registered.
        pub fn message<M, F, Fut>(mut self, handler: F) -> Self
        where
            M: $crate::Payload,
            F: Fn($crate::Context, M) -> Fut + Send + Sync + 'static,
            Fut: std::future::Future + Send + 'static,
            Fut::Output: $crate::IntoOneWay,
        {
            self.router = self.router.message(handler);
            self
        }

        /// Registers a handler answering requests of type `M`; see [`Router::request`](crate::Router::request).
        ///
        /// # Panics
        /// If a handler for `M` is already registered.
        pub fn request<M, R, F, Fut>(mut self, handler: F) -> Self
        where
            M: $crate::Payload,
            R: $crate::Payload,
            F: Fn($crate::Context, M) -> Fut + Send + Sync + 'static,
            Fut: std::future::Future<Output = Result<R, $crate::Status>> + Send + 'static,
        {
            self.router = self.router.request(handler);
            self
        }

        /// Adds a middleware around every handler; the first added runs outermost.
        pub fn middleware(mut self, middleware: impl $crate::Middleware) -> Self {
            self.router = self.router.middleware(middleware);
            self
        }

        /// Adds a group of handlers, e.g. a generated service wrapper.
        pub fn service(mut self, service: impl $crate::Service) -> Self {
            self.router = self.router.service(service);
            self
        }

        /// Replaces the limits and timeouts; see [`Config`](crate::Config).
        pub fn config(mut self, config: $crate::Config) -> Self {
            self.config = config;
            self
        }
    };
}
pub(crate) use routing_methods;
