//! `Router`: handlers keyed by method or by message type, plus the middleware around them, as the builders collect them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::BuildError;
use crate::route::context::Context;
use crate::route::handler::{self, BoxHandler, IntoOneWay, Kind, Route};
use crate::route::middleware::{self, Middleware};
use crate::wire::message::{Payload, TypeName};
use crate::wire::status::Status;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Handlers and middleware for one server or client.
///
/// A handler is found by the frame's method when it names one (what generated
/// stubs send: `package.Service/Method`), otherwise by its payload type (the
/// untyped API, broadcasts and publishes). So any number of methods may share
/// input and output types, while each payload type has at most one
/// type-routed handler. A frame without a method whose type has no handler
/// of its own reaches the one method taking that type, if there is exactly one.
///
/// Usually used through the same-named methods on
/// [`ServerBuilder`](crate::ServerBuilder) and [`ClientBuilder`](crate::ClientBuilder);
/// generated service wrappers implement [`Service`] to add their methods here.
/// Mistakes (a route registered twice, a malformed method name, middleware
/// scoped to nothing) are reported by the builder's `build`, as a [`BuildError`].
#[derive(Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct Router {
    routes: Vec<Pending>,
    middleware: Vec<Arc<dyn Middleware>>,
    scoped: Vec<(String, Arc<dyn Middleware>)>,
    /// The first mistake made while registering, reported by `finish`.
    error: Option<BuildError>,
}

/// What a route is found by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Type(String),
    Method(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Type(name) => write!(f, "message type {name:?}"),
            Key::Method(name) => write!(f, "method {name:?}"),
        }
    }
}

/// A handler as registered, before middleware and metrics are attached.
struct Pending {
    key: Key,
    kind: Kind,
    input: TypeName,
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

    /// Registers a handler for one-way messages of type `M` sent without a
    /// method (`send`, `broadcast`, `publish`).
    ///
    /// Registering a second handler for `M` makes `build` fail with
    /// [`BuildError::DuplicateRoute`].
    pub fn message<M, F, Fut>(self, handler: F) -> Router
    where
        M: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoOneWay,
    {
        let key = Key::Type(TypeName::of::<M>().to_string());
        self.route(
            key,
            Kind::OneWay,
            TypeName::of::<M>(),
            handler::one_way(handler),
        )
    }

    /// Registers a handler answering requests of type `M` sent without a
    /// method (`request`). It returns the reply `R`; headers for the reply are
    /// set with [`Context::set_reply_header`].
    ///
    /// Registering a second handler for `M` makes `build` fail with
    /// [`BuildError::DuplicateRoute`].
    pub fn request<M, R, F, Fut>(self, handler: F) -> Router
    where
        M: Payload,
        R: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
    {
        let key = Key::Type(TypeName::of::<M>().to_string());
        self.route(
            key,
            Kind::Request,
            TypeName::of::<M>(),
            handler::request(handler),
        )
    }

    /// Registers the request/reply handler of method `method`, written
    /// `package.Service/Method` (e.g. `acme.inventory.v2.Stock/Adjust`): what
    /// generated service wrappers call. Requests naming this method must carry
    /// an `M`; others are answered INVALID_ARGUMENT.
    ///
    /// A malformed name or a second handler for `method` makes `build` fail.
    pub fn method<M, R, F, Fut>(self, method: &str, handler: F) -> Router
    where
        M: Payload,
        R: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
    {
        match check_method(method) {
            Ok(()) => self.route(
                Key::Method(method.to_owned()),
                Kind::Request,
                TypeName::of::<M>(),
                handler::request(handler),
            ),
            Err(err) => self.fail(err),
        }
    }

    /// Registers the handler of one-way method `method` (see [`method`](Self::method)).
    ///
    /// A malformed name or a second handler for `method` makes `build` fail.
    pub fn one_way_method<M, F, Fut>(self, method: &str, handler: F) -> Router
    where
        M: Payload,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoOneWay,
    {
        match check_method(method) {
            Ok(()) => self.route(
                Key::Method(method.to_owned()),
                Kind::OneWay,
                TypeName::of::<M>(),
                handler::one_way(handler),
            ),
            Err(err) => self.fail(err),
        }
    }

    /// Adds a middleware around every handler (registered before or after it).
    /// The first one added runs outermost.
    pub fn middleware(mut self, middleware: impl Middleware) -> Router {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Adds a middleware around some handlers only: those of one method
    /// (`scope` = `package.Service/Method`), of every method of one service
    /// (`scope` = `package.Service`), or of one message type routed by type
    /// (`scope` = its full name). It runs inside the global middleware; scoped
    /// middleware runs in the order added.
    ///
    /// A scope that matches no registered handler makes `build` fail with
    /// [`BuildError::UnknownScope`] (a typo would otherwise go unnoticed).
    pub fn middleware_for(mut self, scope: &str, middleware: impl Middleware) -> Router {
        self.scoped.push((scope.to_owned(), Arc::new(middleware)));
        self
    }

    /// Adds a group of handlers, e.g. a generated service wrapper.
    pub fn service(self, service: impl Service) -> Router {
        service.register(self)
    }

    fn route(mut self, key: Key, kind: Kind, input: TypeName, handler: BoxHandler) -> Router {
        if self.routes.iter().any(|p| p.key == key) {
            return self.fail(BuildError::DuplicateRoute {
                route: key.to_string(),
            });
        }
        self.routes.push(Pending {
            key,
            kind,
            input,
            handler,
        });
        self
    }

    fn fail(mut self, err: BuildError) -> Router {
        self.error.get_or_insert(err);
        self
    }

    /// Wraps every handler in its middleware chain; the result is immutable.
    pub(crate) fn finish(
        self,
        metrics: &crate::observe::metrics::Counters,
    ) -> Result<Routes, BuildError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if let Some((scope, _)) = self
            .scoped
            .iter()
            .find(|(scope, _)| !self.routes.iter().any(|p| in_scope(&p.key, scope)))
        {
            return Err(BuildError::UnknownScope {
                scope: scope.clone(),
            });
        }
        let global: Arc<[Arc<dyn Middleware>]> = self.middleware.clone().into();
        let mut routes = Routes {
            middleware: Arc::clone(&global),
            ..Routes::default()
        };
        for pending in self.routes {
            let scoped: Vec<_> = self
                .scoped
                .iter()
                .filter(|(scope, _)| in_scope(&pending.key, scope))
                .map(|(_, mw)| Arc::clone(mw))
                .collect();
            let stack = if scoped.is_empty() {
                Arc::clone(&global)
            } else {
                global.iter().cloned().chain(scoped).collect()
            };
            let (stats, table) = match &pending.key {
                Key::Type(name) => (metrics.route(name, None), &mut routes.by_type),
                Key::Method(name) => (
                    metrics.route(&pending.input.to_string(), Some(name)),
                    &mut routes.by_method,
                ),
            };
            let route = Route {
                kind: pending.kind,
                input: pending.input,
                input_name: Utf8Bytes::from_static(pending.input.full()),
                method_name: match &pending.key {
                    Key::Method(name) => Utf8Bytes::from(name.clone()),
                    Key::Type(_) => Utf8Bytes::default(),
                },
                handler: middleware::compose(&stack, pending.handler),
                stats,
            };
            let name = match pending.key {
                Key::Type(name) | Key::Method(name) => name,
            };
            table.insert(name.into_bytes().into_boxed_slice(), route);
        }
        routes.add_type_fallbacks();
        Ok(routes)
    }
}

/// Whether middleware scoped to `scope` wraps the route found by `key`.
fn in_scope(key: &Key, scope: &str) -> bool {
    match key {
        Key::Type(name) => name == scope,
        Key::Method(name) => {
            name == scope || name.split_once('/').is_some_and(|(svc, _)| svc == scope)
        }
    }
}

/// A method name is `package.Service/Method`: one slash, a non-empty service
/// and method name, no whitespace.
fn check_method(method: &str) -> Result<(), BuildError> {
    let invalid = |reason: &'static str| BuildError::InvalidMethod {
        method: method.to_owned(),
        reason,
    };
    let (service, name) = method
        .split_once('/')
        .ok_or_else(|| invalid("it has no '/' between the service and the method"))?;
    if service.is_empty() || name.is_empty() {
        return Err(invalid("the service and the method must not be empty"));
    }
    if name.contains('/') {
        return Err(invalid("it has more than one '/'"));
    }
    if method.chars().any(char::is_whitespace) || service.starts_with('.') {
        return Err(invalid(
            "it must be the service's full name without a leading dot, a '/', and the method name",
        ));
    }
    Ok(())
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|p| p.key.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("middleware", &self.middleware.len())
            .field(
                "scoped_middleware",
                &self.scoped.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The finished, read-only routing tables. Lookups borrow the name from the
/// received frame, as received: no allocation per message, and a name found
/// is valid UTF-8 without a check (it equals one registered as a `str`).
#[derive(Default)]
pub(crate) struct Routes {
    /// The global middleware, which also sees clients' pub/sub frames.
    middleware: Arc<[Arc<dyn Middleware>]>,
    /// Type routes, plus for each type without one the single method taking it.
    by_type: Table<Route>,
    by_method: Table<Route>,
    /// Types with no type route that several methods take: a frame of such a
    /// type without a method cannot be routed, and the answer names them.
    ambiguous: Table<Vec<Box<str>>>,
}

/// A routing table, looked up once per frame with a name the peer sent.
/// Hashed with foldhash, not SipHash, which took 2.8% of the CPU of a
/// one-way message: its keys are fixed when the server is built, so a
/// peer's names can make a lookup miss but never lengthen a probe.
type Table<V> = HashMap<Box<[u8]>, V, foldhash::fast::FixedState>;

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("middleware", &self.middleware.len())
            .field("by_type", &names(&self.by_type))
            .field("by_method", &names(&self.by_method))
            .finish()
    }
}

impl Routes {
    /// The global middleware, outermost first.
    pub(crate) fn middleware(&self) -> &[Arc<dyn Middleware>] {
        &self.middleware
    }

    /// The route for a frame without a method: the type's own handler, else
    /// the one method taking that type.
    #[inline]
    pub(crate) fn by_type(&self, type_name: &[u8]) -> Option<&Route> {
        self.by_type.get(type_name)
    }

    /// The methods taking `type_name` when more than one does (and no
    /// handler is registered for the type itself).
    pub(crate) fn ambiguous(&self, type_name: &str) -> Option<&[Box<str>]> {
        self.ambiguous.get(type_name.as_bytes()).map(Vec::as_slice)
    }

    /// Lets frames without a method reach a method's handler when exactly
    /// one method takes their type (a broadcast to a generated one-way
    /// method, an untyped request to the only RPC taking its input).
    fn add_type_fallbacks(&mut self) {
        let mut taking: HashMap<String, Vec<&str>> = HashMap::new();
        for route in self.by_method.values() {
            taking
                .entry(route.input.to_string())
                .or_default()
                .push(route.method_name.as_str());
        }
        for (type_name, mut methods) in taking {
            let key = type_name.into_bytes().into_boxed_slice();
            if self.by_type.contains_key(&key) {
                continue;
            }
            if let [method] = methods[..] {
                let route = self.by_method[method.as_bytes()].clone();
                self.by_type.insert(key, route);
            } else {
                methods.sort_unstable();
                let methods = methods.into_iter().map(Box::from).collect();
                self.ambiguous.insert(key, methods);
            }
        }
    }

    #[inline]
    pub(crate) fn by_method(&self, method: &[u8]) -> Option<&Route> {
        self.by_method.get(method)
    }
}

/// A table's names, for `Debug`.
fn names<V>(table: &Table<V>) -> Vec<std::borrow::Cow<'_, str>> {
    table.keys().map(|k| String::from_utf8_lossy(k)).collect()
}

/// Adds the routing methods to a builder with a `router: Router` field.
macro_rules! routing_methods {
    () => {
        /// Registers a handler for one-way messages of type `M`; see [`Router::message`](crate::Router::message).
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

        /// Registers the request/reply handler of a method (`package.Service/Method`);
        /// see [`Router::method`](crate::Router::method).
        pub fn method<M, R, F, Fut>(mut self, method: &str, handler: F) -> Self
        where
            M: $crate::Payload,
            R: $crate::Payload,
            F: Fn($crate::Context, M) -> Fut + Send + Sync + 'static,
            Fut: std::future::Future<Output = Result<R, $crate::Status>> + Send + 'static,
        {
            self.router = self.router.method(method, handler);
            self
        }

        /// Registers the handler of a one-way method; see [`Router::one_way_method`](crate::Router::one_way_method).
        pub fn one_way_method<M, F, Fut>(mut self, method: &str, handler: F) -> Self
        where
            M: $crate::Payload,
            F: Fn($crate::Context, M) -> Fut + Send + Sync + 'static,
            Fut: std::future::Future + Send + 'static,
            Fut::Output: $crate::IntoOneWay,
        {
            self.router = self.router.one_way_method(method, handler);
            self
        }

        /// Adds a middleware around every handler; the first added runs outermost.
        pub fn middleware(mut self, middleware: impl $crate::Middleware) -> Self {
            self.router = self.router.middleware(middleware);
            self
        }

        /// Adds a middleware around the handlers of one method, one service or
        /// one message type; see [`Router::middleware_for`](crate::Router::middleware_for).
        pub fn middleware_for(mut self, scope: &str, middleware: impl $crate::Middleware) -> Self {
            self.router = self.router.middleware_for(scope, middleware);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_checked() {
        for bad in [
            "Adjust",
            "/Adjust",
            "acme.Stock/",
            "a/b/c",
            "a.B /C",
            ".a.B/C",
        ] {
            assert!(
                matches!(check_method(bad), Err(BuildError::InvalidMethod { .. })),
                "{bad:?}"
            );
        }
        for good in ["acme.inventory.v2.Stock/Adjust", "Stock/Clone"] {
            assert!(check_method(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn scopes_match_methods_services_and_types() {
        let method = Key::Method("acme.Stock/Adjust".into());
        assert!(in_scope(&method, "acme.Stock/Adjust"));
        assert!(in_scope(&method, "acme.Stock"));
        assert!(!in_scope(&method, "acme.Stoc"));
        assert!(!in_scope(&method, "acme"));
        let by_type = Key::Type("acme.Item".into());
        assert!(in_scope(&by_type, "acme.Item"));
        assert!(!in_scope(&by_type, "acme"));
    }
}
