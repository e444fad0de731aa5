//! The cluster tests' harness (included by each test file): a real broker on a loopback port, replicas as OS processes, clients that record what reaches them.

use std::process::Stdio;
use std::time::Duration;

use goomerang::{Client, Status};
use goomerang_tests::Note;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;

use goomerang_cluster_tests::{Ack, Command};

/// Every cluster test body runs under this bound.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

/// Runs `f` under [`BOUND`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("cluster test exceeded its time bound")
}

/// Where the broker binary is: `$NATS_SERVER`, else `nats-server` on the
/// PATH or in /usr/sbin (Debian's package). `None` when there is none and
/// `GOOMERANG_REQUIRE_TOOLS` is unset (the test then says it skipped);
/// with it set, a missing broker fails the test.
pub(crate) fn nats_server() -> Option<String> {
    let found = std::env::var("NATS_SERVER").ok().or_else(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("GOOMERANG_REQUIRE_TOOLS").is_none(),
            "nats-server is required (GOOMERANG_REQUIRE_TOOLS is set): apt-get install nats-server"
        );
        eprintln!("SKIPPED: no nats-server (apt-get install nats-server)");
    }
    found
}

/// A nats-server on a loopback port, killed when dropped.
#[derive(Debug)]
pub(crate) struct Broker {
    binary: String,
    child: Option<Child>,
    port: u16,
}

impl Broker {
    /// Starts nats-server on a port of its choosing; returns once it listens.
    pub(crate) async fn nats(binary: String) -> Broker {
        let (child, port) = spawn_nats(&binary, None).await;
        Broker {
            binary,
            child: Some(child),
            port,
        }
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill nats-server");
        }
    }

    /// Starts it again on the same port; returns once it listens.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        let (child, _) = spawn_nats(&self.binary, Some(self.port)).await;
        self.child = Some(child);
    }
}

async fn spawn_nats(binary: &str, port: Option<u16>) -> (Child, u16) {
    let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
    let mut child = Process::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nats-server");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let marker = "Listening for client connections on 127.0.0.1:";
    let port = loop {
        let line = lines
            .next_line()
            .await
            .expect("read nats-server's log")
            .expect("nats-server exited before listening");
        if let Some(at) = line.find(marker) {
            break line[at + marker.len()..].trim().parse().expect("a port");
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// A `goomerang-replica` process on the broker, killed when dropped.
#[derive(Debug)]
pub(crate) struct Replica {
    /// Killed when dropped.
    _child: Child,
    /// Its WebSocket URL.
    pub(crate) url: String,
}

impl Replica {
    /// Starts a replica with the given extra arguments; returns once it listens.
    pub(crate) async fn start(nats_url: &str, namespace: &str, extra: &[&str]) -> Replica {
        let mut child = Process::new(env!("CARGO_BIN_EXE_goomerang-replica"))
            .args(["--nats", nats_url, "--namespace", namespace])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn goomerang-replica");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines
            .next_line()
            .await
            .expect("read the replica's stdout")
            .expect("the replica exited before listening");
        let url = line
            .strip_prefix("listening ")
            .expect("`listening <url>`")
            .to_owned();
        Replica { _child: child, url }
    }
}

/// What a member received: the note's text and the topic it came on.
pub(crate) type Received = (String, Option<String>);

/// A client of one replica that records every `Note` it receives.
#[derive(Debug)]
pub(crate) struct Member {
    /// The client.
    pub(crate) client: Client,
    inbox: mpsc::UnboundedReceiver<Received>,
}

impl Member {
    /// Connects to `url`.
    pub(crate) async fn connect(url: &str) -> Member {
        let (tx, inbox) = mpsc::unbounded_channel();
        let client = Client::builder()
            .message(move |ctx, note: Note| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((note.text, ctx.metadata().topic().map(str::to_owned)));
                }
            })
            .connect(url)
            .await
            .expect("member connects");
        Member { client, inbox }
    }

    /// The next note received.
    pub(crate) async fn next(&mut self) -> Received {
        self.inbox.recv().await.expect("member's inbox open")
    }

    /// Every note received so far, without waiting.
    pub(crate) fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.inbox.try_recv().ok()).collect()
    }

    /// Asks this member's replica to run `op` (see [`Command`]).
    pub(crate) async fn command(&self, op: &str, topic: &str, text: &str) -> Result<Ack, Status> {
        self.client
            .request(Command {
                op: op.into(),
                topic: topic.into(),
                text: text.into(),
            })
            .await
            .map(|reply| reply.into_inner())
    }

    /// The replica's backplane counts, after a barrier with the broker.
    pub(crate) async fn stats(&self) -> Ack {
        self.command("stats", "", "").await.expect("stats")
    }

    /// The replica's backplane counts now, without asking the broker.
    pub(crate) async fn counts(&self) -> Ack {
        self.command("counts", "", "").await.expect("counts")
    }

    /// Asks until `done` holds for the replica's counts (after a barrier
    /// with the broker, which fails while it is down).
    pub(crate) async fn wait_stats(&self, done: impl Fn(&Ack) -> bool) -> Ack {
        loop {
            if let Ok(ack) = self.command("stats", "", "").await
                && done(&ack)
            {
                return ack;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sends every note this member receives from now on to `tx`, tagged.
    pub(crate) fn forward_to(
        mut self,
        tag: usize,
        tx: mpsc::UnboundedSender<(usize, Received)>,
    ) -> Client {
        tokio::spawn(async move {
            while let Some(received) = self.inbox.recv().await {
                if tx.send((tag, received)).is_err() {
                    return;
                }
            }
        });
        self.client
    }
}
