//! `goomerang-replica`: one server replica on a backplane, for the cluster tests.
//!
//! `goomerang-replica --nats <url> [--namespace <ns>] [--queue <events>]` binds 127.0.0.1:0,
//! prints `listening <ws url>` on stdout, and serves until killed: `Ping`
//! requests are echoed, `Command` requests fan a `Note` out from the server,
//! clients may broadcast and publish.

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
    let url = arg("--nats").ok_or("usage: goomerang-replica --nats <url> [--namespace <ns>]")?;
    let namespace = arg("--namespace").unwrap_or_else(|| "goomerang".into());
    let queue = match arg("--queue") {
        Some(n) => n.parse()?,
        None => 65_536,
    };

    let nats = goomerang_nats::Nats::builder(url)
        .namespace(namespace)
        .queue_capacity(queue)
        .connect()
        .await?;
    let nats_handle = nats.handle();
    let incidents = Arc::new(AtomicU64::new(0));
    let server_slot: Arc<OnceLock<Server>> = Arc::new(OnceLock::new());
    let server = Server::builder()
        .backplane(nats)
        .allow_client_broadcast(|_| true)
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
                let nats = nats_handle.clone();
                let incidents = incidents.clone();
                let conn = ctx.connection().clone();
                async move {
                    let server = server.ok_or_else(|| Status::unavailable("starting"))?;
                    if command.op == "stats" {
                        // A barrier: what this replica sent the broker (its
                        // renewed subscriptions too) has been processed.
                        nats.flush()
                            .await
                            .map_err(|e| Status::unavailable(e.to_string()))?;
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
                    let stats = nats.stats();
                    Ok::<_, Status>(Ack {
                        reached: reached as u64,
                        grouped: stats.grouped,
                        reconnects: stats.reconnects,
                        forwarded: stats.forwarded,
                        relayed: stats.relayed,
                        dropped: stats.dropped,
                        groups: stats.groups,
                        disconnects: stats.disconnects,
                        incidents: incidents.load(Ordering::Relaxed),
                    })
                }
            }
        })
        .build()?;
    let _ = server_slot.set(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // stdout is line-buffered: the line goes out at once.
    println!("listening ws://{addr}{}", goomerang::DEFAULT_PATH);
    server.serve(listener).await?;
    Ok(())
}
