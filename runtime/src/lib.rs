//! goomerang: typed protobuf messages over WebSockets.
//!
//! A [`Server`] and a [`Client`] exchange protobuf messages (any prost message
//! implementing [`prost::Name`]) in every direction: one-way sends, and
//! request/reply with deadlines and cancellation, client → server and server →
//! client, many requests multiplexed on one connection. Handlers are keyed by
//! message type; middleware wraps them; panics in handlers are contained.
//!
//! The wire protocol is documented in `PROTOCOL.md`; `frame.proto` is the envelope.
//!
//! ```no_run
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping { #[prost(uint64, tag = "1")] n: u64 }
//! # impl prost::Name for Ping { const NAME: &'static str = "Ping"; const PACKAGE: &'static str = "demo"; }
//! # #[derive(Clone, PartialEq, prost::Message)] struct Pong { #[prost(uint64, tag = "1")] n: u64 }
//! # impl prost::Name for Pong { const NAME: &'static str = "Pong"; const PACKAGE: &'static str = "demo"; }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use goomerang::{Client, Server, Status};
//!
//! let server = Server::builder()
//!     .request(|_ctx, ping: Ping| async move { Ok::<_, Status>(Pong { n: ping.n + 1 }) })
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn({ let server = server.clone(); async move { server.serve(listener).await } });
//!
//! let client = Client::builder().connect(&format!("ws://{addr}/ws")).await?;
//! let pong: Pong = client.request(Ping { n: 1 }).await?.into_inner();
//! assert_eq!(pong.n, 2);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod config;
mod conn;
mod driver;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod incident;
mod observe;
pub mod pubsub;
mod route;
mod server;
mod state;
mod sync;
#[cfg(feature = "tls")]
pub mod tls;
mod wire;
mod ws;

pub use client::reconnect::{Reconnect, WhileDisconnected};
pub use client::{Client, ClientBuilder};
pub use config::{Config, Keepalive, SlowConsumer};
pub use conn::close::{CloseInfo, Initiator};
pub use conn::connection::Connection;
pub use conn::peer::Peer;
/// Sessions that outlive a connection: the store a server keeps them in.
pub mod session {
    pub use crate::conn::session::{
        MemorySessions, SessionData, SessionStore, SessionStoreError, StoreFuture,
    };
}
pub use error::{BuildError, Error};
pub use incident::Incident;
#[cfg(feature = "metrics")]
pub use observe::export::Metrics;
pub use route::context::Context;
pub use route::handler::IntoOneWay;
pub use route::middleware;
pub use route::middleware::Middleware;
pub use route::router::{Router, Service};
pub use server::handshake::{Accept, Handshake, Reject};
pub use server::{DEFAULT_PATH, Server, ServerBuilder};
pub use state::State;
pub use wire::frame::SUBPROTOCOL;
pub use wire::message::{Headers, IntoMessage, Message, Metadata, Payload, Response};
pub use wire::status::{Code, Status};

pub use goomerang_macros::handler;
/// The Prometheus client library [`Metrics`] registers into, re-exported so
/// that your registry and goomerang's use the same version.
#[cfg(feature = "metrics")]
pub use prometheus_client;
pub use prost;

/// Longer explanations: how routing, backpressure, shutdown, pub/sub, the
/// security rules, the error model and the data path's performance work. The
/// wire protocol itself is `PROTOCOL.md`.
pub mod guide {
    #[doc = include_str!("../docs/routing.md")]
    pub mod routing {}
    #[doc = include_str!("../docs/backpressure.md")]
    pub mod backpressure {}
    #[doc = include_str!("../docs/shutdown.md")]
    pub mod shutdown {}
    #[doc = include_str!("../docs/pubsub.md")]
    pub mod pubsub {}
    #[doc = include_str!("../docs/scaling.md")]
    pub mod scaling {}
    #[doc = include_str!("../docs/security.md")]
    pub mod security {}
    #[doc = include_str!("../docs/errors.md")]
    pub mod errors {}
    #[doc = include_str!("../docs/performance.md")]
    pub mod performance {}
}

/// What generated code uses; not a stable API for hand-written code.
#[doc(hidden)]
pub mod codegen {
    pub use crate::{
        Client, Connection, Context, IntoMessage, Payload, Peer, Response, Router, Service, Status,
    };
}

/// Includes the code generated for protobuf package `$package` by the build.rs
/// path (`protoc_gen_goomerang::compile_protos`): prost's messages and the
/// goomerang services, from `$OUT_DIR`. Every package has both files, services
/// or not.
///
/// Generated code names other packages' messages with `super::` paths, as
/// prost's code does, so include each package in modules nested like its name:
///
/// ```ignore
/// pub mod chat {
///     pub mod v1 {
///         goomerang::include_proto!("chat.v1");
///     }
/// }
/// pub mod common {
///     pub mod v1 {
///         goomerang::include_proto!("common.v1"); // chat.v1 uses its messages
///     }
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
        include!(concat!(env!("OUT_DIR"), "/", $package, ".goomerang.rs"));
    };
}
