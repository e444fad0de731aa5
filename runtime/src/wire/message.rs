//! Messages: the typed payload plus headers a caller sends, and the metadata and headers a receiver sees.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

/// String headers travelling with a message (e.g. `traceparent`). Keys are case-sensitive.
pub type Headers = HashMap<String, String>;

/// A protobuf message goomerang can carry: any prost message that knows its full
/// protobuf name. prost-build writes the [`prost::Name`] impl when
/// `enable_type_names()` is on (protoc-gen-prost: `enable_type_names=true`).
pub trait Payload: prost::Message + prost::Name + Default + Send + Sync + 'static {}

impl<T: prost::Message + prost::Name + Default + Send + Sync + 'static> Payload for T {}

/// A payload type's full protobuf name, kept as its two static halves
/// (`PACKAGE`, `NAME`) so that sending never allocates it. It reads
/// `PACKAGE.NAME`, or `NAME` alone without a package, which is what
/// [`prost::Name::full_name`] returns by default and what prost-build generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TypeName {
    package: &'static str,
    name: &'static str,
}

impl TypeName {
    pub(crate) fn of<T: prost::Name>() -> TypeName {
        TypeName {
            package: T::PACKAGE,
            name: T::NAME,
        }
    }

    /// No type: the empty name control replies carry.
    pub(crate) const NONE: TypeName = TypeName {
        package: "",
        name: "",
    };

    /// The length in bytes of the full name.
    pub(crate) fn len(&self) -> usize {
        if self.package.is_empty() {
            self.name.len()
        } else {
            self.package.len() + 1 + self.name.len()
        }
    }

    /// Appends the full name to `buf`.
    pub(crate) fn put(&self, buf: &mut impl bytes::BufMut) {
        if !self.package.is_empty() {
            buf.put_slice(self.package.as_bytes());
            buf.put_u8(b'.');
        }
        buf.put_slice(self.name.as_bytes());
    }

    /// Whether `other` is made of the very same static halves: a quick
    /// check for equality that needs no comparison of the strings.
    pub(crate) fn same_halves(&self, other: &TypeName) -> bool {
        std::ptr::eq(self.package, other.package) && std::ptr::eq(self.name, other.name)
    }

    /// Whether `full` is this name.
    pub(crate) fn is(&self, full: &str) -> bool {
        if self.package.is_empty() {
            return full == self.name;
        }
        full.len() == self.len()
            && full.starts_with(self.package)
            && full.ends_with(self.name)
            && full.as_bytes()[self.package.len()] == b'.'
    }

    /// The full name in one static string: made once per type per process
    /// (kept for the process's life, like the `PACKAGE` and `NAME` constants
    /// it joins: a program has as many as it has message types), so that a
    /// received message's metadata names its type without a copy or a
    /// reference count.
    pub(crate) fn full(&self) -> &'static str {
        static JOINED: std::sync::Mutex<BTreeMap<TypeName, &'static str>> =
            std::sync::Mutex::new(BTreeMap::new());
        if self.package.is_empty() {
            return self.name;
        }
        let mut joined = crate::sync::lock(&JOINED);
        if let Some(&full) = joined.get(self) {
            return full;
        }
        let full: &'static str = Box::leak(self.to_string().into_boxed_str());
        joined.insert(*self, full);
        full
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.package.is_empty() {
            write!(f, "{}.", self.package)?;
        }
        f.write_str(self.name)
    }
}

/// An outgoing message: a payload, its headers and, for requests, a deadline.
///
/// Anything that takes `impl IntoMessage<T>` also takes a bare `T`.
///
/// ```
/// # #[derive(Clone, PartialEq, prost::Message)] struct Hello { #[prost(string, tag = "1")] name: String }
/// # impl prost::Name for Hello { const NAME: &'static str = "Hello"; const PACKAGE: &'static str = "demo"; }
/// use std::time::Duration;
/// let msg = goomerang::Message::new(Hello { name: "ada".into() })
///     .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
///     .timeout(Duration::from_secs(2));
/// assert_eq!(msg.headers().len(), 1);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Message<T> {
    payload: T,
    headers: Headers,
    timeout: Option<Duration>,
}

impl<T> Message<T> {
    /// Wraps a payload with no headers and the default timeout.
    pub fn new(payload: T) -> Self {
        Message {
            payload,
            headers: Headers::new(),
            timeout: None,
        }
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// For requests: how long to wait for the reply. Without it the connection's
    /// default request timeout applies. The peer is told, and stops its handler
    /// when the time is up.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub(crate) fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    pub(crate) fn into_parts(self) -> (T, Headers, Option<Duration>) {
        (self.payload, self.headers, self.timeout)
    }
}

/// What `send` and `request` take: a bare payload `T` or a [`Message<T>`] with headers.
pub trait IntoMessage<T>: Send {
    /// Wraps a bare payload; returns a `Message` as is.
    fn into_message(self) -> Message<T>;
}

impl<T: Payload> IntoMessage<T> for T {
    fn into_message(self) -> Message<T> {
        Message::new(self)
    }
}

impl<T: Payload> IntoMessage<T> for Message<T> {
    fn into_message(self) -> Message<T> {
        self
    }
}

/// What a receiver knows about a message besides its payload and headers.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Borrowed from the received frame's bytes: no copy per message.
    pub(crate) type_name: tokio_tungstenite::tungstenite::Utf8Bytes,
    pub(crate) size: usize,
    pub(crate) id: u64,
    /// As sent: microseconds since the Unix epoch (0 or less: not said),
    /// read as a time only when asked.
    pub(crate) created_unix_us: i64,
    pub(crate) topic: Option<String>,
    /// Borrowed from the received frame's bytes; empty when routed by type.
    pub(crate) method: tokio_tungstenite::tungstenite::Utf8Bytes,
    pub(crate) position: Option<crate::wire::topic::Position>,
}

impl Metadata {
    /// The method called (`package.Service/Method`), for a message sent
    /// through a generated stub; `None` when it was routed by type.
    pub fn method(&self) -> Option<&str> {
        Some(self.method.as_str()).filter(|m| !m.is_empty())
    }

    /// The payload's full protobuf name, e.g. `chat.v1.Hello`.
    pub fn type_name(&self) -> &str {
        self.type_name.as_str()
    }

    /// The encoded payload size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The correlation id: nonzero for requests and replies, 0 for one-way messages.
    pub fn correlation_id(&self) -> u64 {
        self.id
    }

    /// When the sender created the message, by the sender's clock, if it said.
    pub fn created(&self) -> Option<SystemTime> {
        crate::wire::frame::created(self.created_unix_us)
    }

    /// The topic, for a message delivered through a subscription.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The message's place in its topic's history, when the server keeps
    /// one for the topic (see `ServerBuilder::history`).
    pub fn position(&self) -> Option<&crate::wire::topic::Position> {
        self.position.as_ref()
    }

    /// Whether this is a request (the sender awaits a reply).
    pub fn is_request(&self) -> bool {
        self.id != 0
    }
}

/// A reply received for a request: the decoded payload, the reply's headers and metadata.
#[derive(Clone, Debug)]
pub struct Response<T> {
    pub(crate) payload: T,
    pub(crate) headers: Headers,
    pub(crate) metadata: Metadata,
}

impl<T> Response<T> {
    /// The reply payload.
    pub fn into_inner(self) -> T {
        self.payload
    }

    /// A reference to the reply payload.
    pub fn get_ref(&self) -> &T {
        &self.payload
    }

    /// The reply's headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The reply's metadata (type name, size, correlation id, creation time).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::TypeName;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Packaged {}
    impl prost::Name for Packaged {
        const NAME: &'static str = "Outer.Inner";
        const PACKAGE: &'static str = "chat.v1";
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Bare {}
    impl prost::Name for Bare {
        const NAME: &'static str = "Hello";
        const PACKAGE: &'static str = "";
    }

    #[test]
    fn type_names_read_as_prost_full_names() {
        for (name, full) in [
            (TypeName::of::<Packaged>(), "chat.v1.Outer.Inner"),
            (TypeName::of::<Bare>(), "Hello"),
        ] {
            assert_eq!(name.to_string(), full);
            assert_eq!(name.len(), full.len());
            let mut written = Vec::new();
            name.put(&mut written);
            assert_eq!(written, full.as_bytes());
            assert!(name.is(full));
            // Joined once: every later call returns the same string.
            assert_eq!(name.full(), full);
            assert!(std::ptr::eq(name.full(), name.full()));
        }
        let packaged = TypeName::of::<Packaged>();
        for other in [
            "chat.v1xOuter.Inner",
            "chat.v1.Outer.Inne",
            "Outer.Inner",
            "",
        ] {
            assert!(!packaged.is(other), "{other:?}");
        }
        assert!(!TypeName::of::<Bare>().is("x.Hello"));
        assert_eq!(TypeName::NONE.len(), 0);
    }
}
