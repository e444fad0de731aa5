//! `goomerang-replica`: one server replica on a backplane, for the cluster tests.
//!
//! `goomerang-replica (--nats <url> | --redis <url>) [--namespace <ns>] [--queue <events>]
//! [--history <pattern>]` binds 127.0.0.1:0,
//! prints `listening <ws url>` on stdout, and serves until killed: `Ping`
//! requests are echoed, `Command` requests fan a `Note` out from the server
//! (or log in, creating a session, and say who is logged in), clients may
//! broadcast and publish. With Redis, sessions are kept there too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use goomerang::{Server, Status};
use goomerang_cluster_tests::{Ack, Command};
use goomerang_tests::{Note, Ping, Pong};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let namespace = arg("--namespace").unwrap_or_else(|| "goomerang".into());
    let queue = match arg("--queue") {
        Some(n) => n.parse()?,
        None => 65_536,
    };
    let builder = Server::builder();
    let (builder, engine) = if let Some(url) = arg("--nats") {
        let nats = goomerang_nats::Nats::builder(url)
            .namespace(namespace)
            .queue_capacity(queue)
            .connect()
            .await?;
        let handle = nats.handle();
        (builder.backplane(nats), Engine::Nats(handle))
    } else if let Some(url) = arg("--redis") {
        let sessions = goomerang_redis::RedisSessions::connect(&url, &namespace).await?;
        let redis = goomerang_redis::Redis::builder(url)
            .namespace(namespace)
            .queue_capacity(queue)
            .connect()
            .await?;
        let handle = redis.handle();
        (
            builder
                .backplane(redis)
                .sessions(sessions, std::time::Duration::from_secs(60)),
            Engine::Redis(handle),
        )
    } else {
        return Err("usage: goomerang-replica (--nats <url> | --redis <url>) [--namespace <ns>] [--queue <events>]".into());
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let port = addr.port();
    let incidents = Arc::new(AtomicU64::new(0));
    let server_slot: Arc<OnceLock<Server>> = Arc::new(OnceLock::new());
    let builder = match arg("--history") {
        Some(pattern) => builder.history(
            pattern,
            goomerang::pubsub::History::new(100, std::time::Duration::from_secs(60)),
        ),
        None => builder,
    };
    let server = builder
        .allow_client_broadcast(|_| true)
        // "<port of the replica>/<connection id>": unique across the cluster.
        .presence_label(move |conn| format!("{port}/{}", conn.id()))
        .on_error({
            let incidents = incidents.clone();
            move |incident, _| {
                if incident.kind() == "backplane" {
                    incidents.fetch_add(1, Ordering::Relaxed);
                }
                eprintln!("replica: {incident}");
            }
        })
        .request(|_ctx, ping: Ping| async move {
            Ok::<_, Status>(Pong {
                n: ping.n,
                text: ping.text,
            })
        })
        .request({
            let server_slot = server_slot.clone();
            move |ctx, command: Command| {
                let server = server_slot.get().cloned();
                let engine = engine.clone();
                let incidents = incidents.clone();
                let conn = ctx.connection().clone();
                async move {
                    let server = server.ok_or_else(|| Status::unavailable("starting"))?;
                    if command.op == "stats" {
                        // A barrier: what this replica sent the broker (its
                        // renewed subscriptions too) has been processed.
                        engine.flush().await.map_err(Status::unavailable)?;
                    }
                    if command.op == "metrics" {
                        // The server's metrics and the backplane's, in one registry.
                        let mut registry =
                            goomerang::prometheus_client::registry::Registry::default();
                        server.metrics().register(&mut registry);
                        engine.register(&mut registry);
                        let mut text = String::new();
                        goomerang::prometheus_client::encoding::text::encode(&mut text, &registry)
                            .map_err(|e| Status::internal(e.to_string()))?;
                        return Ok(Ack {
                            members: vec![text],
                            ..Ack::default()
                        });
                    }
                    if command.op == "login" {
                        conn.create_session(&Note {
                            text: command.text.clone(),
                        })
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    }
                    if command.op == "login" || command.op == "whoami" {
                        let name = conn.session::<Note>().map(|n| n.text).unwrap_or_default();
                        return Ok(Ack {
                            members: vec![name],
                            ..Ack::default()
                        });
                    }
                    if command.op == "presence" {
                        let presence = server
                            .presence(&command.topic, command.limit as usize)
                            .await
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        return Ok(Ack {
                            present: presence.count as u64,
                            complete: presence.complete,
                            members: presence.members.into_iter().map(|m| m.label).collect(),
                            ..Ack::default()
                        });
                    }
                    let note = Note { text: command.text };
                    let reached = match command.op.as_str() {
                        "broadcast" => server.broadcast(note),
                        "except" => server.broadcast_except(&conn, note),
                        "publish" => server.publish(&command.topic, note),
                        "stats" | "counts" => Ok(0),
                        other => return Err(Status::invalid_argument(format!("op {other:?}"))),
                    }
                    .map_err(|e| Status::internal(e.to_string()))?;
                    let mut ack = engine.stats();
                    ack.reached = reached as u64;
                    ack.incidents = incidents.load(Ordering::Relaxed);
                    Ok::<_, Status>(ack)
                }
            }
        })
        .build()?;
    let _ = server_slot.set(server.clone());
    // stdout is line-buffered: the line goes out at once.
    println!("listening ws://{addr}{}", goomerang::DEFAULT_PATH);
    server.serve(listener).await?;
    Ok(())
}

/// The backplane the replica runs on, reached after it moved into the server.
#[derive(Clone, Debug)]
enum Engine {
    Nats(goomerang_nats::NatsHandle),
    Redis(goomerang_redis::RedisHandle),
}

impl Engine {
    /// Registers the backplane's metrics.
    fn register(&self, registry: &mut goomerang::prometheus_client::registry::Registry) {
        match self {
            Engine::Nats(nats) => nats.register(registry),
            Engine::Redis(redis) => redis.register(registry),
        }
    }

    /// A barrier with the broker.
    async fn flush(&self) -> Result<(), String> {
        match self {
            Engine::Nats(nats) => nats.flush().await.map_err(|e| e.to_string()),
            Engine::Redis(redis) => redis.flush().await.map_err(|e| e.to_string()),
        }
    }

    /// The counts, in an `Ack`.
    fn stats(&self) -> Ack {
        let s = match self {
            Engine::Nats(nats) => nats.stats(),
            Engine::Redis(redis) => redis.stats(),
        };
        Ack {
            forwarded: s.forwarded,
            relayed: s.relayed,
            grouped: s.grouped,
            dropped: s.dropped,
            failed: s.failed,
            unclaimed: s.unclaimed,
            groups: s.groups,
            disconnects: s.disconnects,
            reconnects: s.reconnects,
            known_groups: s.known_groups,
            replicas: s.replicas,
            ..Ack::default()
        }
    }
}
