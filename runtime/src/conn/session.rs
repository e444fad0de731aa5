//! Sessions: application data that outlives a connection, found again by a key the client presents when it reconnects (to any replica sharing the store).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::sync::lock;

/// What [`SessionStore`] methods return.
pub type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SessionStoreError>> + Send + 'a>>;

/// A session's content: a protobuf message, by its full type name and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionData {
    type_name: String,
    payload: Bytes,
}

impl SessionData {
    /// The message `type_name` (e.g. `app.v1.User`) encoded as `payload`.
    pub fn new(type_name: impl Into<String>, payload: Bytes) -> SessionData {
        SessionData {
            type_name: type_name.into(),
            payload,
        }
    }

    /// The message's full protobuf name.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The encoded message.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

/// Where sessions live between connections. [`MemorySessions`] is the
/// default; `goomerang_redis::RedisSessions` shares them between replicas.
/// Implementations expire a session `ttl` after it was last saved.
pub trait SessionStore: Send + Sync + 'static {
    /// The session saved under `key`, if it exists and has not expired.
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SessionData>>;
    /// Saves (or replaces) the session under `key` for `ttl`.
    fn save<'a>(&'a self, key: &'a str, data: SessionData, ttl: Duration) -> StoreFuture<'a, ()>;
    /// Forgets the session under `key` (nothing if there is none).
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
}

/// A session store failed (its backend could not be reached, say).
#[derive(Debug, thiserror::Error)]
#[error("session store: {what}")]
pub struct SessionStoreError {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SessionStoreError {
    /// What went wrong.
    pub fn new(what: impl Into<String>) -> SessionStoreError {
        SessionStoreError {
            what: what.into(),
            source: None,
        }
    }

    /// What went wrong, caused by `source`.
    pub fn with_source(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SessionStoreError {
        SessionStoreError {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Sessions in this process's memory: the default store, for a single server.
#[derive(Debug, Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, (SessionData, Instant)>>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> MemorySessions {
        MemorySessions::default()
    }
}

impl SessionStore for MemorySessions {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SessionData>> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        // Expired sessions go as they are found, and on every save.
        let found = match sessions.get(key) {
            Some((data, expires)) if *expires > now => Some(data.clone()),
            Some(_) => {
                sessions.remove(key);
                None
            }
            None => None,
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(&'a self, key: &'a str, data: SessionData, ttl: Duration) -> StoreFuture<'a, ()> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, (_, expires)| *expires > now);
        sessions.insert(key.to_owned(), (data, now + ttl));
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        lock(&self.sessions).remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A server's sessions: the store and how long a session lives unused.
#[derive(Clone)]
pub(crate) struct Sessions {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A new session key: 32 random bytes, hex.
pub(crate) fn new_key() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The key a client holds, presented when it (re)connects.
#[derive(Debug, Default)]
pub(crate) struct HeldKey(Mutex<Option<String>>);

impl HeldKey {
    pub(crate) fn get(&self) -> Option<String> {
        lock(&self.0).clone()
    }

    pub(crate) fn set(&self, key: Option<String>) {
        *lock(&self.0) = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_sessions_expire() {
        let store = MemorySessions::new();
        let data = SessionData::new("app.v1.User", Bytes::from_static(b"\x0a\x03ada"));
        store
            .save("k", data.clone(), Duration::from_secs(10))
            .await
            .expect("saved");
        assert_eq!(store.load("k").await.expect("loaded"), Some(data));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.load("k").await.expect("loaded"), None);
        assert_eq!(store.load("missing").await.expect("loaded"), None);
        let key = new_key();
        assert_eq!(key.len(), 64);
        assert_ne!(key, new_key());
    }
}
