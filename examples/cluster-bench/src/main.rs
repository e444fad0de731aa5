//! goomerang-cluster-bench: publish throughput and latency across three replicas linked by NATS or Redis, beside one server alone.
//!
//! `cargo run --release -p goomerang-cluster-bench [-- --subscribers 100 --messages 2000]`
//!
//! Each engine gets a fresh broker (nats-server, redis-server: from the
//! PATH, /usr/sbin, /usr/bin or `$NATS_SERVER` / `$REDIS_SERVER`) on a
//! loopback port, three servers in this process with that backplane, and
//! `--subscribers` clients on each subscribed to one topic. A client of the
//! first replica publishes:
//! - **throughput**: `--messages` 32-byte publishes as fast as it can; the
//!   figure is deliveries per second until every subscriber got every one;
//! - **latency**: 200 publishes, one every 5 ms (60,000 deliveries/s, a
//!   fraction of the throughput); p50 and p99 from publish to delivery, over
//!   every subscriber. The subscribers run in this process, on the same
//!   two worker threads as the servers, so this includes their scheduling.
//!
//! The in-process row is one server, no backplane, with all the subscribers.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goomerang::{Client, Server};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// `bench.v1.Stamp`: when and which.
#[derive(Clone, PartialEq, prost::Message)]
struct Stamp {
    #[prost(uint64, tag = "1")]
    sent_us: u64,
    #[prost(bytes = "vec", tag = "2")]
    pad: Vec<u8>,
}

impl prost::Name for Stamp {
    const NAME: &'static str = "Stamp";
    const PACKAGE: &'static str = "bench.v1";
}

const TOPIC: &str = "bench.t";
const LATENCY_MESSAGES: u64 = 200;
const LATENCY_GAP: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    InProcess,
    Nats,
    Redis,
}

/// What every subscriber's handler feeds.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    target: AtomicU64,
    done: Notify,
    /// Latencies in µs, while measuring latency.
    latencies: Mutex<Option<Vec<u32>>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let subscribers = arg("--subscribers", 100)?;
    let messages = arg("--messages", 2000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "| engine | replicas × subscribers | throughput (deliveries/s) | publishes/s | latency p50 | latency p99 |"
        );
        println!("|---|---|---:|---:|---:|---:|");
        for engine in [Engine::InProcess, Engine::Nats, Engine::Redis] {
            match run(engine, subscribers, messages).await {
                Ok(line) => println!("{line}"),
                Err(err) => println!("| {engine:?} | not run: {err} | | | | |"),
            }
        }
        Ok(())
    })
}

async fn run(
    engine: Engine,
    subscribers: u64,
    messages: u64,
) -> Result<String, Box<dyn std::error::Error>> {
    let (_broker, url) = match engine {
        Engine::InProcess => (None, String::new()),
        Engine::Nats => {
            let (child, port) = broker("nats-server", "NATS_SERVER").await?;
            (Some(child), format!("nats://127.0.0.1:{port}"))
        }
        Engine::Redis => {
            let (child, port) = broker("redis-server", "REDIS_SERVER").await?;
            (Some(child), format!("redis://127.0.0.1:{port}"))
        }
    };
    let replicas = if engine == Engine::InProcess { 1 } else { 3 };
    let per_replica = subscribers * 3 / replicas;
    let mut servers = Vec::new();
    for _ in 0..replicas {
        let builder = Server::builder();
        let builder = match engine {
            Engine::InProcess => builder,
            Engine::Nats => builder.backplane(
                goomerang_nats::Nats::builder(url.as_str())
                    .namespace("bench")
                    .connect()
                    .await?,
            ),
            Engine::Redis => builder.backplane(
                goomerang_redis::Redis::builder(url.as_str())
                    .namespace("bench")
                    .connect()
                    .await?,
            ),
        };
        let server = builder.build()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ws = format!("ws://{}{}", listener.local_addr()?, goomerang::DEFAULT_PATH);
        tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        servers.push((server, ws));
    }
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut clients = Vec::new();
    for (_, ws) in &servers {
        for _ in 0..per_replica {
            let tally = tally.clone();
            let client = Client::builder()
                .message(move |_ctx, stamp: Stamp| {
                    let tally = tally.clone();
                    async move {
                        if let Some(latencies) = tally.latencies.lock().expect("lock").as_mut() {
                            let now = start.elapsed().as_micros() as u64;
                            latencies.push(now.saturating_sub(stamp.sent_us) as u32);
                        }
                        let n = tally.delivered.fetch_add(1, Ordering::Relaxed) + 1;
                        if n == tally.target.load(Ordering::Relaxed) {
                            tally.done.notify_one();
                        }
                    }
                })
                .connect(ws)
                .await?;
            client.subscribe(TOPIC).await?;
            clients.push(client);
        }
    }
    let publisher = Client::builder().connect(&servers[0].1).await?;
    let recipients = per_replica * replicas;
    // Warm-up, which also waits until every replica relays: one message
    // reaches everyone.
    deliver(&tally, &publisher, 1, recipients, start, Duration::ZERO).await?;

    let began = Instant::now();
    deliver(
        &tally,
        &publisher,
        messages,
        recipients,
        start,
        Duration::ZERO,
    )
    .await?;
    let took = began.elapsed().as_secs_f64();
    let throughput = (messages * recipients) as f64 / took;
    let publishes = messages as f64 / took;

    *tally.latencies.lock().expect("lock") = Some(Vec::new());
    deliver(
        &tally,
        &publisher,
        LATENCY_MESSAGES,
        recipients,
        start,
        LATENCY_GAP,
    )
    .await?;
    let mut latencies = tally
        .latencies
        .lock()
        .expect("lock")
        .take()
        .unwrap_or_default();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));
    for client in clients {
        let _ = client.close().await;
    }
    for (server, _) in servers {
        let _ = server.shutdown(Duration::from_secs(2)).await;
    }
    Ok(format!(
        "| {} | {replicas} × {per_replica} | {throughput:.0} | {publishes:.0} | {} | {} |",
        match engine {
            Engine::InProcess => "in-process (one server)",
            Engine::Nats => "NATS",
            Engine::Redis => "Redis",
        },
        micros(p50),
        micros(p99)
    ))
}

fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Publishes `n` stamps (every `gap`, or back to back) and waits until each
/// of the `recipients` got all of them.
async fn deliver(
    tally: &Tally,
    publisher: &Client,
    n: u64,
    recipients: u64,
    start: Instant,
    gap: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    tally.delivered.store(0, Ordering::Relaxed);
    tally.target.store(n * recipients, Ordering::Relaxed);
    let done = tally.done.notified();
    let mut tick = (!gap.is_zero()).then(|| tokio::time::interval(gap));
    for _ in 0..n {
        if let Some(tick) = tick.as_mut() {
            tick.tick().await;
        }
        let stamp = Stamp {
            sent_us: start.elapsed().as_micros() as u64,
            pad: vec![0; 24],
        };
        publisher.publish(TOPIC, stamp).await?;
    }
    tokio::time::timeout(Duration::from_secs(120), done)
        .await
        .map_err(|_| {
            format!(
                "{} of {} deliveries after 120 s",
                tally.delivered.load(Ordering::Relaxed),
                n * recipients
            )
        })?;
    Ok(())
}

/// Starts a broker on a free loopback port; returns it and the port.
async fn broker(name: &str, env: &str) -> Result<(Child, u16), Box<dyn std::error::Error>> {
    let binary = std::env::var(env)
        .ok()
        .or_else(|| {
            let path = std::env::var("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin".into(), "/usr/bin".into()])
                .map(|dir: std::path::PathBuf| dir.join(name))
                .find(|p| p.is_file())
                .map(|p| p.display().to_string())
        })
        .ok_or_else(|| format!("no {name} (apt-get install {name})"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(binary);
    let (marker, from_stderr) = if name == "nats-server" {
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        ("Server is ready", true)
    } else {
        command.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        ("Ready to accept connections", false)
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(if from_stderr {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(if from_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()?;
    let log: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if from_stderr {
        Box::new(child.stderr.take().ok_or("stderr")?)
    } else {
        Box::new(child.stdout.take().ok_or("stdout")?)
    };
    let mut lines = BufReader::new(log).lines();
    while let Some(line) = lines.next_line().await? {
        if line.contains(marker) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, port));
        }
    }
    Err(format!("{name} exited before it was ready").into())
}
