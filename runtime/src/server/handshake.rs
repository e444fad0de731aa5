//! The handshake: what a server sees of an upgrade request before accepting it, and how it accepts (with state) or refuses.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode, Uri};

use crate::route::handler::BoxFuture;

/// An upgrade request as the server's [`on_open`](crate::ServerBuilder::on_open)
/// hook sees it, before the connection exists.
///
/// Browsers cannot set headers on a WebSocket, so a token can also come in the
/// query string ([`query`](Self::query)) or as an extra subprotocol
/// ([`subprotocols`](Self::subprotocols)).
#[derive(Debug, Clone)]
pub struct Handshake {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) subprotocols: Vec<String>,
}

impl Handshake {
    /// The request URI (path and query).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// All request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The peer's socket address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The subprotocols the client offered, in order (e.g. `goomerang.v1`,
    /// then a token it chose to send this way).
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// A query-string parameter, decoded as `application/x-www-form-urlencoded`
    /// (`?token=a%20b` → `a b`, `+` is a space); the first one if repeated.
    pub fn query(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.uri.query()?.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// Accepts a handshake, attaching state the connection carries for its life
/// (read it with [`Connection::state`](crate::Connection::state)).
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct Accept {
    pub(crate) state: http::Extensions,
}

impl Accept {
    /// Accepts with no state.
    pub fn new() -> Accept {
        Accept::default()
    }

    /// Attaches a value, one per type (e.g. the authenticated identity).
    pub fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Accept {
        self.state.insert(value);
        self
    }
}

/// Refuses a handshake with an HTTP status; the client sees the status and the reason
/// ([`Error::Refused`](crate::Error::Refused)).
#[derive(Debug, Clone)]
pub struct Reject {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

impl Reject {
    /// Refuses with any status (a 4xx or 5xx; others become 403).
    pub fn new(status: u16, reason: impl Into<String>) -> Reject {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::FORBIDDEN);
        Reject {
            status,
            reason: reason.into(),
        }
    }

    /// 401: the client did not prove who it is.
    pub fn unauthorized(reason: impl Into<String>) -> Reject {
        Reject::new(401, reason)
    }

    /// 403: the client may not connect.
    pub fn forbidden(reason: impl Into<String>) -> Reject {
        Reject::new(403, reason)
    }
}

pub(crate) type OnOpen = Arc<dyn Fn(Handshake) -> BoxFuture<Result<Accept, Reject>> + Send + Sync>;

pub(crate) fn on_open<F, Fut>(f: F) -> OnOpen
where
    F: Fn(Handshake) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Accept, Reject>> + Send + 'static,
{
    Arc::new(move |handshake| Box::pin(f(handshake)))
}

/// Origins allowed to open WebSockets: exact (`https://app.example.com`),
/// subdomain wildcards (`https://*.example.com`), or `*` for any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins(Vec<String>);

impl Origins {
    pub(crate) fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Origins {
        Origins(
            patterns
                .into_iter()
                .map(|p| p.into().to_ascii_lowercase())
                .collect(),
        )
    }

    /// Requests without an Origin header (non-browser clients) are allowed.
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::to_ascii_lowercase) else {
            return true;
        };
        self.0.iter().any(|pattern| {
            if pattern == "*" || *pattern == origin {
                return true;
            }
            match pattern.split_once("://*.") {
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .is_some_and(|host| host.ends_with(&format!(".{domain}"))),
                None => false,
            }
        })
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(uri: &str) -> Handshake {
        Handshake {
            uri: uri.parse().expect("uri"),
            headers: HeaderMap::new(),
            peer_addr: None,
            subprotocols: Vec::new(),
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        let hs = handshake("/ws?a=1&token=x%20y%2Bz&flag");
        assert_eq!(hs.query("token").as_deref(), Some("x y+z"));
        assert_eq!(hs.query("a").as_deref(), Some("1"));
        assert_eq!(hs.query("flag").as_deref(), Some(""));
        assert_eq!(hs.query("missing"), None);
        assert_eq!(
            handshake("/ws?bad=%zz%").query("bad").as_deref(),
            Some("%zz%")
        );
    }

    #[test]
    fn origin_patterns() {
        let origins = Origins::new(["https://app.example.com", "https://*.example.org"]);
        assert!(origins.allows(None));
        assert!(origins.allows(Some("https://app.example.com")));
        assert!(origins.allows(Some("https://a.b.example.org")));
        assert!(!origins.allows(Some("https://example.org")));
        assert!(!origins.allows(Some("http://a.example.org")));
        assert!(!origins.allows(Some("https://evil.com")));
        assert!(!origins.allows(Some("https://evilexample.org")));
        assert!(Origins::new(["*"]).allows(Some("https://anything")));
    }
}
