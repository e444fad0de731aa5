//! The goomerang side of each scenario: a server and client(s) in this process over 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use goomerang::{Client, Server, Status};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::{Sample, percentiles};

type Error = Box<dyn std::error::Error>;

/// `bench.Req`: a request carrying `data`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Req {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) data: Bytes,
}

/// `bench.Reply`: a small reply.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Reply {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) data: Bytes,
}

/// `bench.Blob`: a one-way payload.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) data: Bytes,
}

impl prost::Name for Req {
    const NAME: &'static str = "Req";
    const PACKAGE: &'static str = "bench";
}
impl prost::Name for Reply {
    const NAME: &'static str = "Reply";
    const PACKAGE: &'static str = "bench";
}
impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "bench";
}

/// Serves `server` on an ephemeral port; returns its URL.
async fn serve(server: &Server) -> Result<String, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}{}", listener.local_addr()?, goomerang::DEFAULT_PATH);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    Ok(url)
}

async fn client(url: &str) -> Result<Client, Error> {
    Ok(Client::builder().reconnect(None).connect(url).await?)
}

/// The server of the request scenarios: answers each `Req` with a small `Reply`.
pub(crate) fn echo_server() -> Server {
    Server::builder()
        .request(|_ctx, _req: Req| async move {
            Ok::<_, Status>(Reply {
                data: Bytes::from_static(b"ok"),
            })
        })
        .build()
        .expect("valid routes")
}

/// `n` requests of 32 bytes, `concurrency` callers sharing one client connection.
pub(crate) async fn sync(n: usize, concurrency: usize) -> Result<Sample, Error> {
    let server = echo_server();
    let url = serve(&server).await?;
    let sample = sync_against(&url, n, concurrency).await?;
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(sample)
}

/// 1,000 requests one at a time; returns the scenarios' 32-byte payload.
async fn warm_up(client: &Client) -> Result<Bytes, Status> {
    let payload = Bytes::from(vec![7u8; 32]);
    for _ in 0..1_000 {
        client
            .request::<_, Reply>(Req {
                data: payload.clone(),
            })
            .await?;
    }
    Ok(payload)
}

/// The client side of [`sync`], against the echo server at `url`.
pub(crate) async fn sync_against(url: &str, n: usize, concurrency: usize) -> Result<Sample, Error> {
    let client = client(url).await?;
    let payload = warm_up(&client).await?;
    let per_caller = n / concurrency;
    let started = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for _ in 0..per_caller {
                    let t = Instant::now();
                    client
                        .request::<_, Reply>(Req {
                            data: payload.clone(),
                        })
                        .await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, Status>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for caller in callers {
        latencies.extend(caller.await??);
    }
    let elapsed = started.elapsed();
    client.close().await?;
    let (p50_us, p99_us) = percentiles(latencies);
    Ok(Sample {
        value: (per_caller * concurrency) as f64 / elapsed.as_secs_f64(),
        p50_us,
        p99_us,
    })
}

/// `n` requests of 32 bytes from one task that keeps `window` of them in
/// flight on one connection (a `FuturesUnordered` refilled as answers come),
/// as the raw baseline's client does.
pub(crate) async fn sync_task(n: usize, window: usize) -> Result<Sample, Error> {
    let server = echo_server();
    let url = serve(&server).await?;
    let client = client(&url).await?;
    let payload = warm_up(&client).await?;
    // A task on the runtime, like the raw client and unlike `block_on`'s thread.
    let caller = tokio::spawn({
        let client = client.clone();
        async move {
            let one = |client: Client, payload: Bytes| async move {
                let t = Instant::now();
                client
                    .request::<_, Reply>(Req { data: payload })
                    .await
                    .map(|_| t.elapsed())
            };
            let started = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut latencies = Vec::with_capacity(n);
            let mut sent = 0;
            while sent < window.min(n) {
                in_flight.push(one(client.clone(), payload.clone()));
                sent += 1;
            }
            while let Some(took) = in_flight.next().await {
                latencies.push(took?);
                if sent < n {
                    in_flight.push(one(client.clone(), payload.clone()));
                    sent += 1;
                }
            }
            Ok::<_, Status>((started.elapsed(), latencies))
        }
    });
    let (elapsed, latencies) = caller.await??;
    client.close().await?;
    server.shutdown(Duration::from_secs(5)).await?;
    let (p50_us, p99_us) = percentiles(latencies);
    Ok(Sample {
        value: n as f64 / elapsed.as_secs_f64(),
        p50_us,
        p99_us,
    })
}

/// `n` one-way messages of `size` bytes from one client, until the server handled the last.
pub(crate) async fn oneway(n: usize, size: usize) -> Result<Sample, Error> {
    // Leaked, a few bytes a run: the handler counts without cloning an Arc
    // per message, as lean as the raw server's counter.
    let count: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let done: &'static Notify = Box::leak(Box::new(Notify::new()));
    let target = n + 1_000;
    let server = Server::builder()
        .message(move |_ctx, _blob: Blob| async move {
            if count.fetch_add(1, Ordering::Relaxed) + 1 == target {
                done.notify_one();
            }
        })
        .build()
        .expect("valid routes");
    let url = serve(&server).await?;
    let client = client(&url).await?;
    let payload = Bytes::from(vec![7u8; size]);
    for _ in 0..1_000 {
        client
            .send(Blob {
                data: payload.clone(),
            })
            .await?;
    }
    let started = Instant::now();
    for _ in 0..n {
        client
            .send(Blob {
                data: payload.clone(),
            })
            .await?;
    }
    done.notified().await;
    let elapsed = started.elapsed();
    client.close().await?;
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(Sample {
        value: n as f64 / elapsed.as_secs_f64(),
        ..Sample::default()
    })
}

/// `clients` connected clients; the server broadcasts `count` 32-byte messages;
/// seconds until every client received every one.
pub(crate) async fn broadcast(clients: usize, count: usize) -> Result<Sample, Error> {
    let server = Server::builder().build().expect("valid routes");
    let url = serve(&server).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let target = clients * count;
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (received, done) = (Arc::clone(&received), Arc::clone(&done));
        let client = Client::builder()
            .reconnect(None)
            .message(move |_ctx, _blob: Blob| {
                let (received, done) = (Arc::clone(&received), Arc::clone(&done));
                async move {
                    if received.fetch_add(1, Ordering::Relaxed) + 1 == target {
                        done.notify_one();
                    }
                }
            })
            .connect(&url)
            .await?;
        connected.push(client);
    }
    while server.connections().len() < clients {
        tokio::task::yield_now().await;
    }
    let payload = Bytes::from(vec![7u8; 32]);
    let started = Instant::now();
    for _ in 0..count {
        server.broadcast(Blob {
            data: payload.clone(),
        })?;
    }
    done.notified().await;
    let elapsed = started.elapsed();
    for client in connected {
        client.close().await?;
    }
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(Sample {
        value: elapsed.as_secs_f64(),
        ..Sample::default()
    })
}
