//! Idle connections: a server in its own process, its RSS from /proc before and after N connections, and the time to open them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::Sample;

type Error = Box<dyn std::error::Error>;

/// Child mode: serve idle connections (goomerang or raw) until stdin closes.
pub(crate) async fn serve(kind: &str) -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    match kind {
        "goomerang" => {
            let server = goomerang::Server::builder().build();
            tokio::spawn(async move { server.serve(listener).await });
        }
        "raw" => {
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
            });
        }
        other => return Err(format!("--serve-idle takes goomerang or raw, not {other:?}").into()),
    }
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    Ok(())
}

fn rss_kib(pid: u32) -> Result<f64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc status")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?;
    Ok(kib)
}

fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Opens `n` idle connections to a fresh `kind` server process; returns
/// (server KiB per connection, seconds to open them all).
pub(crate) async fn measure(kind: &str, n: usize) -> Result<(Sample, Sample), Error> {
    if let Some(limit) = open_file_limit()
        && (limit as usize) < n + 256
    {
        return Err(format!(
            "the open-file limit is {limit}; {n} connections need {} (raise it with `ulimit -n`)",
            n + 256
        )
        .into());
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-idle", kind])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("server process exited")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut port = String::new();
    BufReader::new(stdout).read_line(&mut port).await?;
    let url = match kind {
        "goomerang" => format!("ws://127.0.0.1:{}{}", port.trim(), goomerang::DEFAULT_PATH),
        _ => format!("ws://127.0.0.1:{}/", port.trim()),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut goomerang_clients = Vec::new();
    let mut raw_clients = Vec::new();
    // 64 handshakes in flight at a time.
    let mut remaining = n;
    while remaining > 0 {
        let batch = remaining.min(64);
        remaining -= batch;
        if kind == "goomerang" {
            let connects =
                (0..batch).map(|_| goomerang::Client::builder().reconnect(None).connect(&url));
            for client in futures_util::future::join_all(connects).await {
                goomerang_clients.push(client?);
            }
        } else {
            let connects = (0..batch).map(|_| tokio_tungstenite::connect_async(url.as_str()));
            for ws in futures_util::future::join_all(connects).await {
                raw_clients.push(ws?.0);
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the server finish its side of the last upgrades.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    drop(goomerang_clients);
    drop(raw_clients);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = child.kill().await;
    Ok((
        Sample {
            value: (after - before) / n as f64,
            ..Sample::default()
        },
        Sample {
            value: connect_seconds,
            ..Sample::default()
        },
    ))
}
