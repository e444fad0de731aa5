//! `goomerang-allocs`: heap allocations per message on each side, counted by a counting global allocator.
//!
//! The server runs in a child process (this binary with `--serve`), so each
//! side's count is its own. Both count every allocation of the process
//! (`stats_alloc` wraps the system allocator), read before and after a phase
//! of `N` messages once the connection is warm:
//!
//! - request: `N` requests of 32 bytes, one at a time, each answered;
//! - one-way: `N` one-way messages of 32 bytes, until the server handled the last.
//!
//! `cargo run --release -p goomerang-bench --bin goomerang-allocs`

use std::alloc::System;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use goomerang::{Client, Server, Status};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Error = Box<dyn std::error::Error>;

/// Requests and one-way messages per measured phase.
const N: usize = 20_000;

/// `bench.Req`: a request carrying `data`.
#[derive(Clone, PartialEq, prost::Message)]
struct Req {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}
impl prost::Name for Req {
    const NAME: &'static str = "Req";
    const PACKAGE: &'static str = "bench";
}

/// `bench.Reply`: a small reply.
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}
impl prost::Name for Reply {
    const NAME: &'static str = "Reply";
    const PACKAGE: &'static str = "bench";
}

/// `bench.Blob`: a one-way payload.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}
impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "bench";
}

fn allocations() -> usize {
    GLOBAL.stats().allocations + GLOBAL.stats().reallocations
}

/// Child mode: serves, and answers each stdin line `<blobs>` with its
/// allocation count once it has handled that many one-way messages.
async fn serve() -> Result<(), Error> {
    let handled = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let server = Server::builder()
        .request(|_ctx, _req: Req| async move {
            Ok::<_, Status>(Reply {
                data: Bytes::from_static(b"ok"),
            })
        })
        .message({
            let (handled, progress) = (handled.clone(), progress.clone());
            move |_ctx, _blob: Blob| {
                let (handled, progress) = (handled.clone(), progress.clone());
                async move {
                    handled.fetch_add(1, Ordering::Relaxed);
                    progress.notify_one();
                }
            }
        })
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    tokio::spawn(async move { server.serve(listener).await });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let blobs: usize = line.trim().parse()?;
        while handled.load(Ordering::Relaxed) < blobs {
            progress.notified().await;
        }
        println!("{}", allocations());
    }
    Ok(())
}

/// The server's side: a child process and the way to ask for its count.
struct Remote {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Remote {
    async fn start() -> Result<(Remote, String), Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let port = stdout.next_line().await?.ok_or("no port")?;
        let url = format!("ws://127.0.0.1:{}{}", port.trim(), goomerang::DEFAULT_PATH);
        Ok((
            Remote {
                child,
                stdin,
                stdout,
            },
            url,
        ))
    }

    /// The server's allocation count once it has handled `blobs` one-way messages.
    async fn allocations(&mut self, blobs: usize) -> Result<usize, Error> {
        self.stdin
            .write_all(format!("{blobs}\n").as_bytes())
            .await?;
        let line = self.stdout.next_line().await?.ok_or("server gone")?;
        Ok(line.trim().parse()?)
    }
}

async fn measure() -> Result<(), Error> {
    let (mut remote, url) = Remote::start().await?;
    let client = Client::builder().reconnect(None).connect(&url).await?;
    let payload = Bytes::from(vec![7u8; 32]);
    let request = || Req {
        data: payload.clone(),
    };
    let blob = || Blob {
        data: payload.clone(),
    };
    // Warm: buffers grown, routes and metrics touched.
    for _ in 0..1_000 {
        client.request::<_, Reply>(request()).await?;
        client.send(blob()).await?;
    }
    let mut blobs = 1_000;

    let (server_before, client_before) = (remote.allocations(blobs).await?, allocations());
    for _ in 0..N {
        client.request::<_, Reply>(request()).await?;
    }
    let client_requests = allocations() - client_before;
    let server_requests = remote.allocations(blobs).await? - server_before;

    let (server_before, client_before) = (remote.allocations(blobs).await?, allocations());
    for _ in 0..N {
        client.send(blob()).await?;
    }
    blobs += N;
    let server_oneway = remote.allocations(blobs).await? - server_before;
    let client_oneway = allocations() - client_before;
    client.close().await?;
    drop(remote.stdin);
    let _ = remote.child.wait().await;

    let per = |count: usize| count as f64 / N as f64;
    println!(
        "\ngoomerang-allocs: heap allocations per message ({N} messages of 32 bytes, after warm-up)\n"
    );
    println!("{:<24} {:>10} {:>10}", "", "client", "server");
    println!(
        "{:<24} {:>10.2} {:>10.2}",
        "request (one at a time)",
        per(client_requests),
        per(server_requests)
    );
    println!(
        "{:<24} {:>10.2} {:>10.2}",
        "one-way",
        per(client_oneway),
        per(server_oneway)
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::args().any(|arg| arg == "--serve") {
        runtime.block_on(serve())
    } else {
        runtime.block_on(measure())
    }
}
