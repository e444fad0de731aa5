//! Cross-process scenarios: the server in a child process (this binary with `--serve-echo`), the client here, as in real deployments.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::{Sample, gm, raw};

type Error = Box<dyn std::error::Error>;

/// Child mode: binds 127.0.0.1:0, prints the port, has `start` serve the
/// listener, and runs until stdin closes (the parent is done).
pub(crate) async fn child(
    start: impl FnOnce(TcpListener) -> Result<(), Error>,
) -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    start(listener)?;
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    Ok(())
}

/// Child mode: serve the request scenarios' echo (goomerang or raw).
pub(crate) async fn serve(kind: &str) -> Result<(), Error> {
    child(|listener| {
        match kind {
            "goomerang" => {
                let server = gm::echo_server();
                tokio::spawn(async move { server.serve(listener).await });
            }
            "raw" => {
                tokio::spawn(raw::serve_echo(listener));
            }
            other => {
                return Err(format!("--serve-echo takes goomerang or raw, not {other:?}").into());
            }
        }
        Ok(())
    })
    .await
}

/// `n` requests, `concurrency` in flight, from this process to a `kind`
/// server in a child process.
async fn sync_to(kind: &str, n: usize, concurrency: usize) -> Result<Sample, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-echo", kind])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut port = String::new();
    BufReader::new(stdout).read_line(&mut port).await?;
    let sample = match kind {
        "goomerang" => {
            let url = format!("ws://127.0.0.1:{}{}", port.trim(), goomerang::DEFAULT_PATH);
            gm::sync_against(&url, n, concurrency).await?
        }
        _ => raw::sync_against(&format!("ws://127.0.0.1:{}/", port.trim()), n, concurrency).await?,
    };
    drop(child.stdin.take());
    let _ = child.wait().await;
    Ok(sample)
}

/// The cross-process request scenario on both sides.
pub(crate) async fn sync(n: usize, concurrency: usize) -> Result<(Sample, Sample), Error> {
    Ok((
        crate::side("goomerang", sync_to("goomerang", n, concurrency)).await?,
        crate::side("raw", sync_to("raw", n, concurrency)).await?,
    ))
}
