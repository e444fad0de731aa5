//! `goomerang-soak`: holds many connections with steady traffic for a while and watches the server.
//!
//! The server runs in a child process (this binary with `--serve`), so its memory and file
//! descriptors are its own. This process opens `--conns` clients (default 10,000) and, for
//! `--secs` seconds (default 600), keeps up requests, publishes to subscribers and reconnects.
//! Every `--every` seconds (default 5) it prints the server's RSS, open fds, and the p99 and
//! count of the requests in that window. At the end: a verdict, RSS and fds flat or not
//! (after a warm-up of a fifth of the run).
//!
//! `cargo run --release -p goomerang-bench --bin goomerang-soak -- --secs 600`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goomerang::{Client, Config, Server, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(uint64, tag = "1")]
    n: u64,
    #[prost(bytes = "vec", tag = "2")]
    pad: Vec<u8>,
}
impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "soak.v1";
}

#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(uint64, tag = "1")]
    n: u64,
}
impl prost::Name for Note {
    const NAME: &'static str = "Note";
    const PACKAGE: &'static str = "soak.v1";
}

struct Options {
    conns: usize,
    secs: u64,
    every: u64,
}

fn options() -> Result<(bool, Options), String> {
    let mut serve = false;
    let mut options = Options {
        conns: 10_000,
        secs: 600,
        every: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<u64, String> {
            args.next()
                .ok_or(format!("{arg} needs a value"))?
                .parse()
                .map_err(|e| format!("{arg}: {e}"))
        };
        match arg.as_str() {
            "--serve" => serve = true,
            "--conns" => options.conns = value()? as usize,
            "--secs" => options.secs = value()?,
            "--every" => options.every = value()?.max(1),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((serve, options))
}

/// Raises the open-file soft limit as far as the hard limit allows.
fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The child: an echo server with pub/sub, until stdin closes.
async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    raise_open_files();
    let server = Server::builder()
        .config(Config::default().max_connections(1_000_000))
        .request(|_ctx, ping: Ping| async move { Ok::<_, Status>(ping) })
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while stdin.next_line().await?.is_some() {}
    server.shutdown(Duration::from_secs(10)).await?;
    serving.await??;
    Ok(())
}

/// VmRSS in KiB and the number of open fds of `pid`.
fn watch(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

async fn connect(url: &str, subscribe: bool, heard: &Arc<AtomicU64>) -> Option<Client> {
    let heard = Arc::clone(heard);
    let client = Client::builder()
        .reconnect(None)
        .message(move |_ctx, _note: Note| {
            heard.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .connect(url)
        .await
        .ok()?;
    if subscribe {
        client.subscribe("soak.>").await.ok()?;
    }
    Some(client)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

async fn soak(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let limit = raise_open_files();
    if (limit as usize) < options.conns + 100 {
        return Err(format!(
            "the open-file limit is {limit}; {} connections need more",
            options.conns
        )
        .into());
    }
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no child pid")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let port = loop {
        let line = lines.next_line().await?.ok_or("the server exited")?;
        if let Some(port) = line.strip_prefix("LISTENING ") {
            break port.parse::<u16>()?;
        }
    };
    let url = format!("ws://127.0.0.1:{port}/ws");
    let heard = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(options.conns);
    for i in 0..options.conns {
        // One client in a hundred listens to the published topic.
        match connect(&url, i.is_multiple_of(100), &heard).await {
            Some(client) => clients.push(client),
            None => return Err(format!("connection {i} failed").into()),
        }
    }
    println!(
        "{} connections open in {:.1}s; soaking for {}s",
        clients.len(),
        started.elapsed().as_secs_f64(),
        options.secs
    );
    let clients = Arc::new(Mutex::new(clients));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(options.secs);

    // Requests: 32 callers, each on a client picked in turn, about 2,000 a second in all.
    let mut traffic = Vec::new();
    for caller in 0..32usize {
        let (clients, latencies, failures) = (
            Arc::clone(&clients),
            Arc::clone(&latencies),
            Arc::clone(&failures),
        );
        traffic.push(tokio::spawn(async move {
            let mut n = caller;
            while Instant::now() < end {
                let client = {
                    let clients = clients.lock().expect("lock");
                    clients[n % clients.len()].clone()
                };
                n += 32;
                let sent = Instant::now();
                match client
                    .request::<_, Ping>(Ping {
                        n: n as u64,
                        pad: vec![0; 256],
                    })
                    .await
                {
                    Ok(_) => latencies.lock().expect("lock").push(sent.elapsed()),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(16)).await;
            }
        }));
    }
    // Publishes: 20 a second, each to the hundredth of the clients that subscribed.
    traffic.push(tokio::spawn({
        let clients = Arc::clone(&clients);
        async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let client = clients.lock().expect("lock")[1].clone();
                let _ = client.publish("soak.tick", Note { n }).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }));
    // Churn: 20 reconnects a second.
    traffic.push(tokio::spawn({
        let (clients, heard, reconnects, url) = (
            Arc::clone(&clients),
            Arc::clone(&heard),
            Arc::clone(&reconnects),
            url.clone(),
        );
        async move {
            let mut victim = 2usize;
            while Instant::now() < end {
                let old = clients.lock().expect("lock")[victim].clone();
                let _ = old.close().await;
                if let Some(fresh) = connect(&url, victim.is_multiple_of(100), &heard).await {
                    clients.lock().expect("lock")[victim] = fresh;
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                victim = (victim + 97) % options.conns.max(3);
                if victim < 2 {
                    victim += 2;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }));

    let mut samples = Vec::new();
    println!(
        "{:>6} {:>10} {:>7} {:>9} {:>8} {:>8} {:>10}",
        "t(s)", "rss(KiB)", "fds", "p99(ms)", "reqs", "failed", "reconnects"
    );
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(options.every)).await;
        let (rss, fds) = watch(pid);
        let mut window = std::mem::take(&mut *latencies.lock().expect("lock"));
        let count = window.len();
        let p99 = p99(&mut window);
        let t = started.elapsed().as_secs();
        println!(
            "{t:>6} {rss:>10} {fds:>7} {:>9.2} {count:>8} {:>8} {:>10}",
            p99.as_secs_f64() * 1e3,
            failures.load(Ordering::Relaxed),
            reconnects.load(Ordering::Relaxed)
        );
        samples.push((t, rss, fds));
    }
    for task in traffic {
        let _ = task.await;
    }
    let warm = samples.len() / 5;
    let after = &samples[warm.min(samples.len().saturating_sub(1))..];
    if let (Some(first), Some(last)) = (after.first(), after.last()) {
        let max_rss = after.iter().map(|s| s.1).max().unwrap_or(0);
        let rss_flat = last.1 <= first.1 + first.1 / 10 + 5 * 1024;
        let fds_flat = last.2 <= first.2 + 100;
        println!(
            "verdict: RSS {} ({} KiB at {}s → {} KiB at {}s, peak {} KiB), fds {} ({} → {}); \
             {} messages heard, {} requests failed, {} reconnects",
            if rss_flat { "flat" } else { "GROWING" },
            first.1,
            first.0,
            last.1,
            last.0,
            max_rss,
            if fds_flat { "flat" } else { "GROWING" },
            first.2,
            last.2,
            heard.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed),
            reconnects.load(Ordering::Relaxed)
        );
    }
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (serve_mode, options) = options()?;
    if serve_mode {
        serve().await
    } else {
        soak(options).await
    }
}
