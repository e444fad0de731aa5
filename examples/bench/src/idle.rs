//! Idle connections: a server in its own process, its RSS from /proc before and after N connections, and the time to open them.
//!
//! Large counts need more than one source address (a loopback address has
//! about 28,000 ephemeral ports) and a raised open-file limit, which the
//! program sets itself ([`raise_open_files`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;
use tokio_tungstenite::WebSocketStream;

use crate::Sample;

type Error = Box<dyn std::error::Error>;

/// Child mode: serve idle connections (goomerang or raw) until stdin closes.
pub(crate) async fn serve(kind: &str) -> Result<(), Error> {
    crate::remote::child(|listener| {
        match kind {
            "goomerang" => {
                let server = goomerang::Server::builder().build().expect("valid routes");
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
            other => {
                return Err(format!("--serve-idle takes goomerang or raw, not {other:?}").into());
            }
        }
        Ok(())
    })
    .await
}

/// A raw WebSocket client connection from `local`.
async fn raw_connect(
    local: IpAddr,
    server: SocketAddr,
    url: &str,
) -> Result<WebSocketStream<TcpStream>, Error> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = socket.connect(server).await?;
    Ok(tokio_tungstenite::client_async(url, tcp).await?.0)
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

/// Source addresses the connections take turns on (127.0.0.1 to .8): room
/// for some 220,000 connections at about 28,000 ephemeral ports each.
const SOURCES: usize = 8;

/// The source address of connection `i`.
pub(crate) fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES) as u8))
}

/// Raises this process's open-file limit (children inherit it) to at least
/// `want` if it can: the soft limit up to the hard one, and the hard one too
/// when privileged. Returns the soft limit in force.
pub(crate) fn raise_open_files(want: u64) -> u64 {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap_or((0, 0));
    if soft >= want {
        return soft;
    }
    if hard < want && rlimit::setrlimit(Resource::NOFILE, want, want).is_ok() {
        return want;
    }
    rlimit::increase_nofile_limit(want).unwrap_or(soft)
}

/// Opens `n` idle connections to a fresh `kind` server process; returns
/// (server KiB per connection, seconds to open them all).
pub(crate) async fn measure(kind: &str, n: usize) -> Result<(Sample, Sample), Error> {
    let limit = raise_open_files((n + 1024) as u64);
    if (limit as usize) < n + 256 {
        return Err(format!(
            "the open-file limit is {limit} and could not be raised; {n} connections need {} (run as root or raise the hard limit)",
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
    let server: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse()?;
    // 64 handshakes in flight at a time.
    let mut opened = 0;
    while opened < n {
        let batch = opened..(opened + 64).min(n);
        opened = batch.end;
        if kind == "goomerang" {
            let connects = batch.map(|i| {
                goomerang::Client::builder()
                    .reconnect(None)
                    .local_address(source(i))
                    .connect(&url)
            });
            for client in futures_util::future::join_all(connects).await {
                goomerang_clients.push(client?);
            }
        } else {
            let connects = batch.map(|i| raw_connect(source(i), server, &url));
            for ws in futures_util::future::join_all(connects).await {
                raw_clients.push(ws?);
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
