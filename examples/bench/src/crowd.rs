//! Many connections: 10,000 clients in rooms of 100, each sending about one request a second while each room gets a publish a second; the server's CPU time per delivered message.
//!
//! The server runs in a child process (this binary with `--serve-echo
//! goomerang`), so its CPU time (user + system, from `/proc/<pid>/stat`)
//! is its own. Delivered messages are the replies plus the publishes each
//! subscriber received, counted over the measured window after a warm-up.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use goomerang::Client;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

use crate::gm::{Blob, Reply, Req};
use crate::{Sample, idle, percentiles};

type Error = Box<dyn std::error::Error>;

/// Clients per room.
const ROOM: usize = 100;

/// The server process's CPU time so far (user + system), from `/proc`.
fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) start at
    // state; utime and stime are the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').ok_or("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// `conns` clients for `secs` seconds (after 2 s of warm-up): the server's
/// CPU microseconds per delivered message, and the requests' p50 and p99.
pub(crate) async fn measure(conns: usize, secs: u64) -> Result<Sample, Error> {
    let limit = idle::raise_open_files((conns + 1024) as u64);
    if (limit as usize) < conns + 256 {
        return Err(
            format!("the open-file limit is {limit}; {conns} connections need more").into(),
        );
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-echo", "goomerang"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("server process exited")?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut port)
        .await?;
    let url = format!("ws://127.0.0.1:{}{}", port.trim(), goomerang::DEFAULT_PATH);

    let heard = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(conns);
    while clients.len() < conns {
        let batch = (clients.len()..(clients.len() + 64).min(conns)).map(|i| {
            let heard = Arc::clone(&heard);
            let url = url.clone();
            async move {
                let client = Client::builder()
                    .reconnect(None)
                    .local_address(idle::source(i))
                    .message(move |_ctx, _blob: Blob| {
                        let heard = Arc::clone(&heard);
                        async move {
                            heard.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .connect(&url)
                    .await?;
                client.subscribe(&format!("room.{}", i / ROOM)).await?;
                Ok::<_, Error>(client)
            }
        });
        for client in futures_util::future::join_all(batch).await {
            clients.push(client?);
        }
    }

    // Each client: a request a second, its phase spread over the second; the
    // first of each room also publishes to it once a second.
    let warm = Instant::now() + Duration::from_secs(2);
    let end = warm + Duration::from_secs(secs);
    let replies = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for (i, client) in clients.iter().cloned().enumerate() {
        let replies = Arc::clone(&replies);
        tasks.push(tokio::spawn(async move {
            let phase = Duration::from_micros((i as u64 * 1_000_000) / conns as u64);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + phase,
                Duration::from_secs(1),
            );
            let payload = Bytes::from(vec![7u8; 32]);
            let mut latencies = Vec::new();
            loop {
                let at = tick.tick().await.into_std();
                if at >= end {
                    break;
                }
                let sent = Instant::now();
                let answered = client
                    .request::<_, Reply>(Req {
                        data: payload.clone(),
                    })
                    .await;
                if answered.is_ok() && sent >= warm {
                    latencies.push(sent.elapsed());
                    replies.fetch_add(1, Ordering::Relaxed);
                }
                if i % ROOM == 0 {
                    let _ = client
                        .publish(
                            &format!("room.{}", i / ROOM),
                            Blob {
                                data: payload.clone(),
                            },
                        )
                        .await;
                }
            }
            latencies
        }));
    }
    tokio::time::sleep_until(warm.into()).await;
    let (cpu_before, heard_before) = (cpu_time(pid)?, heard.load(Ordering::Relaxed));
    tokio::time::sleep_until(end.into()).await;
    let (cpu_after, heard_after) = (cpu_time(pid)?, heard.load(Ordering::Relaxed));
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let delivered = replies.load(Ordering::Relaxed) + (heard_after - heard_before);
    println!(
        "crowd_10k: {conns} connections, {secs} s: {} replies, {} publishes delivered, server CPU {:.2} s",
        replies.load(Ordering::Relaxed),
        heard_after - heard_before,
        (cpu_after - cpu_before).as_secs_f64()
    );
    drop(clients);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let (p50_us, p99_us) = percentiles(latencies);
    Ok(Sample {
        value: (cpu_after - cpu_before).as_secs_f64() * 1e6 / delivered.max(1) as f64,
        p50_us,
        p99_us,
    })
}
