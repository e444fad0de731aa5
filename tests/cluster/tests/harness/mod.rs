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

tokio::task_local! {
    /// What the test body under [`bounded`] last said it was waiting for.
    static STEP: std::cell::Cell<&'static str>;
}

/// Runs `f` under [`BOUND`]; past it, fails naming the last [`step`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    STEP.scope(std::cell::Cell::new("start"), async {
        match tokio::time::timeout(BOUND, f).await {
            Ok(output) => output,
            Err(_) => panic!(
                "cluster test exceeded its time bound while waiting for: {}",
                STEP.with(std::cell::Cell::get)
            ),
        }
    })
    .await
}

/// Records what the body of a [`bounded`] test waits for next, so that a
/// test that exceeds its bound says where it stood.
pub(crate) fn step(what: &'static str) {
    let _ = STEP.try_with(|step| step.set(what));
}

/// The brokers a backplane runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Nats,
    Redis,
}

impl Kind {
    fn binary_name(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Kind::Nats => "NATS_SERVER",
            Kind::Redis => "REDIS_SERVER",
        }
    }
}

/// Where the broker's binary is: `$NATS_SERVER` / `$REDIS_SERVER`, else on
/// the PATH or in /usr/sbin or /usr/bin (Debian's packages). `None` when
/// there is none and `GOOMERANG_REQUIRE_TOOLS` is unset (the test then says
/// it skipped); with it set, a missing broker fails the test.
pub(crate) fn broker_binary(kind: Kind) -> Option<String> {
    let name = kind.binary_name();
    let found = std::env::var(kind.env_var()).ok().or_else(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .map(|dir: std::path::PathBuf| dir.join(name))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("GOOMERANG_REQUIRE_TOOLS").is_none(),
            "{name} is required (GOOMERANG_REQUIRE_TOOLS is set): apt-get install {name}"
        );
        eprintln!("SKIPPED: no {name} (apt-get install {name})");
    }
    found
}

/// A broker on a loopback port, killed when dropped (with its JetStream
/// store, for NATS).
#[derive(Debug)]
pub(crate) struct Broker {
    kind: Kind,
    binary: String,
    child: Option<Child>,
    port: u16,
    store: std::path::PathBuf,
}

impl Broker {
    /// Starts a broker of `kind`; returns once it listens.
    pub(crate) async fn start(kind: Kind, binary: String) -> Broker {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let store = std::env::temp_dir().join(format!(
            "goomerang-broker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let (child, port) = spawn_broker(kind, &binary, None, &store).await;
        Broker {
            kind,
            binary,
            child: Some(child),
            port,
            store,
        }
    }

    /// The replica's arguments that point it here.
    pub(crate) fn replica_args(&self) -> [String; 2] {
        match self.kind {
            Kind::Nats => ["--nats".into(), format!("nats://127.0.0.1:{}", self.port)],
            Kind::Redis => ["--redis".into(), format!("redis://127.0.0.1:{}", self.port)],
        }
    }

    /// Kills the broker (SIGKILL) and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the broker");
        }
    }

    /// Starts it again on the same port (Redis empty: nothing was persisted;
    /// NATS with its JetStream store); returns once it listens.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        let (child, _) = spawn_broker(self.kind, &self.binary, Some(self.port), &self.store).await;
        self.child = Some(child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

async fn spawn_broker(
    kind: Kind,
    binary: &str,
    port: Option<u16>,
    store: &std::path::Path,
) -> (Child, u16) {
    for _attempt in 0..5 {
        // nats-server picks a free port itself (`-p -1`) and logs it; Redis
        // cannot, so it gets one the kernel just handed out.
        let port = match (kind, port) {
            (_, Some(port)) => port,
            (Kind::Nats, None) => 0,
            (Kind::Redis, None) => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port(),
        };
        let mut process = Process::new(binary);
        let marker = match kind {
            Kind::Nats => {
                let p = if port == 0 {
                    "-1".to_owned()
                } else {
                    port.to_string()
                };
                // JetStream on, for topic history, storing under `store`.
                let store = store.to_str().expect("a UTF-8 temporary directory");
                process.args(["-a", "127.0.0.1", "-p", &p, "-js", "-sd", store]);
                process.stdout(Stdio::null()).stderr(Stdio::piped());
                "Listening for client connections on 127.0.0.1:"
            }
            Kind::Redis => {
                process.args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ]);
                process.stdout(Stdio::piped()).stderr(Stdio::null());
                "Ready to accept connections"
            }
        };
        let mut child = process
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the broker");
        let log: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match kind {
            Kind::Nats => Box::new(child.stderr.take().expect("stderr")),
            Kind::Redis => Box::new(child.stdout.take().expect("stdout")),
        };
        let mut lines = BufReader::new(log).lines();
        let mut listening = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(marker) {
                listening = Some(match kind {
                    Kind::Nats => line[at + marker.len()..].trim().parse().expect("a port"),
                    Kind::Redis => port,
                });
                break;
            }
        }
        let Some(port) = listening else {
            // It exited before listening (the port was taken meanwhile): again.
            continue;
        };
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return (child, port);
    }
    panic!("{binary} did not start listening in five attempts");
}

/// A `goomerang-replica` process on the broker, killed when dropped.
#[derive(Debug)]
pub(crate) struct Replica {
    /// Killed when dropped.
    child: Child,
    /// Its WebSocket URL.
    pub(crate) url: String,
}

impl Replica {
    /// Starts a replica with the given extra arguments; returns once it listens.
    pub(crate) async fn start(broker: &Broker, namespace: &str, extra: &[&str]) -> Replica {
        let mut child = Process::new(env!("CARGO_BIN_EXE_goomerang-replica"))
            .args(broker.replica_args())
            .args(["--namespace", namespace])
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
        Replica { child, url }
    }
}

impl Replica {
    /// Kills the replica (SIGKILL) and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.expect("kill the replica");
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
        Member::connect_with_fallbacks(url, &[]).await
    }

    /// Connects to `url`, reconnecting to `fallbacks` in turn when it is lost.
    pub(crate) async fn connect_with_fallbacks(url: &str, fallbacks: &[&str]) -> Member {
        let (tx, inbox) = mpsc::unbounded_channel();
        let client = Client::builder()
            .fallback_urls(fallbacks.iter().copied())
            .reconnect(Some(
                goomerang::Reconnect::default()
                    .backoff(Duration::from_millis(10), Duration::from_millis(100)),
            ))
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
                limit: 0,
            })
            .await
            .map(|reply| reply.into_inner())
    }

    /// Who is subscribed to `topic` across the cluster, as this member's
    /// replica finds it: (count, complete, labels listed).
    pub(crate) async fn presence(&self, topic: &str, limit: u64) -> (u64, bool, Vec<String>) {
        let ack: Ack = self
            .client
            .request(Command {
                op: "presence".into(),
                topic: topic.into(),
                limit,
                ..Command::default()
            })
            .await
            .map(|reply| reply.into_inner())
            .expect("presence");
        (ack.present, ack.complete, ack.members)
    }

    /// The value of `series` (name and labels, as exported) in the
    /// replica's metrics (the server's and its backplane's); `None` if absent.
    pub(crate) async fn metric(&self, series: &str) -> Option<u64> {
        let ack = self.command("metrics", "", "").await.expect("metrics");
        let text = ack.members.into_iter().next().unwrap_or_default();
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(|value| value.trim().parse().expect("an integer sample"))
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
