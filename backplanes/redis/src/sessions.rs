//! `RedisSessions`: a session store on Redis, so that a client resumes its session on any replica.

use std::time::Duration;

use bytes::Bytes;
use goomerang::session::{SessionData, SessionStore, SessionStoreError, StoreFuture};
use prost::Message as _;
use redis::aio::ConnectionManager;

use crate::ConnectError;

/// How a session is kept: its content's type and bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(string, tag = "1")]
    type_name: String,
    #[prost(bytes = "bytes", tag = "2")]
    payload: Bytes,
}

/// Sessions in Redis under `<namespace>:session:<key>`, each expiring on
/// its own (`SET ... PX`). Give every replica one (same URL and namespace)
/// with `ServerBuilder::sessions`.
#[derive(Clone)]
pub struct RedisSessions {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSessions {
    /// Connects to the Redis server at `url`; keys go under `namespace`.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisSessions, ConnectError> {
        if namespace.is_empty() || namespace.chars().any(char::is_whitespace) {
            return Err(ConnectError::InvalidNamespace(namespace.to_owned()));
        }
        let error = |source| ConnectError::Redis {
            url: url.to_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(error)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(error)?;
        Ok(RedisSessions {
            conn,
            prefix: format!("{namespace}:session:"),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn failed(what: &'static str) -> impl Fn(redis::RedisError) -> SessionStoreError {
    move |err| SessionStoreError::with_source(what, err)
}

impl SessionStore for RedisSessions {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SessionData>> {
        Box::pin(async move {
            let found: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.key(key))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(failed("loading a session from Redis"))?;
            let Some(bytes) = found else {
                return Ok(None);
            };
            let stored = Stored::decode(Bytes::from(bytes)).map_err(|err| {
                SessionStoreError::with_source("a session in Redis does not decode", err)
            })?;
            Ok(Some(SessionData::new(stored.type_name, stored.payload)))
        })
    }

    fn save<'a>(&'a self, key: &'a str, data: SessionData, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let stored = Stored {
                type_name: data.type_name().to_owned(),
                payload: data.payload().clone(),
            };
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(stored.encode_to_vec())
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .exec_async(&mut self.conn.clone())
                .await
                .map_err(failed("saving a session to Redis"))
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            redis::cmd("DEL")
                .arg(self.key(key))
                .exec_async(&mut self.conn.clone())
                .await
                .map_err(failed("removing a session from Redis"))
        })
    }
}
