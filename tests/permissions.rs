//! Who may connect, subscribe, publish and broadcast: atomic admission under the connection
//! limit, the server's pub/sub policies, client broadcast off by default, global middleware
//! (the rate limit included) seeing clients' pub/sub frames, and the refusals counted.

use std::sync::{Arc, Mutex};

use goomerang::pubsub::{Control, ControlKind};
use goomerang::{
    Accept, Client, Code, Connection, Incident, Middleware, Server, Status, middleware,
};
use goomerang_tests::*;
use tokio::sync::mpsc;

type Inbox = mpsc::UnboundedReceiver<String>;
type Reports = mpsc::UnboundedReceiver<(Code, String)>;

/// A client that forwards every `Note` it receives, and every peer report (`ERROR` id 0).
async fn member(
    server: &TestServer,
    builder: goomerang::ClientBuilder,
) -> (Client, Inbox, Reports) {
    let (tx, inbox) = mpsc::unbounded_channel();
    let (report_tx, reports) = mpsc::unbounded_channel();
    let client = server
        .connect(
            builder
                .message(move |_ctx, note: Note| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(note.text);
                    }
                })
                .on_error(move |incident, _| {
                    if let Incident::Remote { status, .. } = incident {
                        let _ = report_tx.send((status.code(), status.message().to_owned()));
                    }
                }),
        )
        .await;
    (client, inbox, reports)
}

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

/// The count in `goomerang_pubsub_refused_total` for `action` (0 when absent).
fn refused(server: &Server, action: &str) -> u64 {
    metric(
        server,
        &format!("goomerang_pubsub_refused_total{{side=\"server\",action=\"{action}\"}}"),
    )
    .unwrap_or(0)
}

#[tokio::test]
async fn client_broadcast_is_off_by_default_and_reaches_nobody() {
    bounded(async {
        let server = start(Server::builder()).await;
        let (sender, _, mut reports) = member(&server, Client::builder()).await;
        let (_other, mut inbox, _) = member(&server, Client::builder()).await;
        sender.broadcast(note("to everyone")).await.expect("queued");
        let (code, message) = reports.recv().await.expect("a report");
        assert_eq!(code, Code::PermissionDenied);
        assert!(message.contains("client broadcast is off"), "{message}");
        // The server's own broadcast is always allowed; it is the first thing anyone gets.
        server
            .server
            .broadcast(note("sentinel"))
            .expect("broadcast");
        assert_eq!(inbox.recv().await.as_deref(), Some("sentinel"));
        assert_eq!(refused(&server.server, "broadcast"), 1);
        server.stop().await;
    })
    .await;
}

#[derive(Clone, Debug, PartialEq)]
enum Role {
    Admin,
    Member,
}

#[tokio::test]
async fn the_broadcast_policy_sees_the_connections_handshake_state() {
    bounded(async {
        let server = start(
            Server::builder()
                .on_open(|hs| async move {
                    let role = match hs.query("role").as_deref() {
                        Some("admin") => Role::Admin,
                        _ => Role::Member,
                    };
                    Ok(Accept::new().with(role))
                })
                .allow_client_broadcast(|conn| conn.state::<Role>() == Some(&Role::Admin)),
        )
        .await;
        let admin = Client::builder()
            .connect(&format!("{}?role=admin", server.url()))
            .await
            .expect("admin connects");
        let (user, mut inbox, mut reports) = member(&server, Client::builder()).await;
        user.broadcast(note("from a member")).await.expect("queued");
        let (code, message) = reports.recv().await.expect("a report");
        assert_eq!(code, Code::PermissionDenied);
        assert_eq!(message, "this connection may not broadcast");
        admin
            .broadcast(note("from the admin"))
            .await
            .expect("queued");
        assert_eq!(inbox.recv().await.as_deref(), Some("from the admin"));
        assert_eq!(refused(&server.server, "broadcast"), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn subscriptions_outside_the_policy_are_permission_denied() {
    bounded(async {
        let server = start(Server::builder().authorize_subscribe(|_conn, sub| {
            sub.pattern.starts_with("public.") && sub.group.as_deref() != Some("spies")
        }))
        .await;
        let client = server.client().await;
        client.subscribe("public.news").await.expect("allowed");
        for (pattern, group) in [("private.>", None), ("public.news", Some("spies"))] {
            let status = match group {
                Some(group) => client.subscribe_group(pattern, group).await,
                None => client.subscribe(pattern).await,
            }
            .expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied, "{status}");
            assert_eq!(
                status.message(),
                format!("this connection may not subscribe {pattern:?}")
            );
        }
        assert_eq!(refused(&server.server, "subscribe"), 2);
        // Unsubscribing needs no permission.
        client
            .unsubscribe("private.>")
            .await
            .expect("always allowed");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publishes_outside_the_policy_reach_nobody() {
    bounded(async {
        let server =
            start(Server::builder().authorize_publish(|_conn, topic| !topic.starts_with("admin.")))
                .await;
        let (listener, mut inbox, _) = member(&server, Client::builder()).await;
        listener.subscribe("admin.*").await.expect("subscribe");
        listener.subscribe("news").await.expect("subscribe");
        let (publisher, _, mut reports) = member(&server, Client::builder()).await;
        publisher
            .publish("admin.shutdown", note("forged"))
            .await
            .expect("queued");
        let (code, message) = reports.recv().await.expect("a report");
        assert_eq!(code, Code::PermissionDenied);
        assert_eq!(
            message,
            "this connection may not publish \"admin.shutdown\""
        );
        publisher
            .publish("news", note("sentinel"))
            .await
            .expect("queued");
        assert_eq!(inbox.recv().await.as_deref(), Some("sentinel"));
        assert_eq!(refused(&server.server, "publish"), 1);
        server.stop().await;
    })
    .await;
}

/// Records every pub/sub frame it sees; refuses publishes of `Blob`.
struct Watch(Arc<Mutex<Vec<String>>>);

impl Middleware for Watch {
    fn call(
        &self,
        ctx: goomerang::Context,
        payload: bytes::Bytes,
        next: middleware::Next,
    ) -> middleware::BoxFuture<middleware::Outcome> {
        next.run(ctx, payload)
    }

    fn control(&self, _conn: &Connection, control: &Control<'_>) -> Result<(), Status> {
        self.0.lock().expect("lock").push(format!(
            "{} {} {:?} {}",
            control.kind.as_str(),
            control.topic,
            control.group,
            control.type_name
        ));
        if control.kind == ControlKind::Publish && control.type_name == "test.v1.Blob" {
            return Err(Status::invalid_argument("no blobs"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn global_middleware_sees_every_pubsub_frame_and_can_refuse_it() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = start(
            Server::builder()
                .middleware(Watch(Arc::clone(&seen)))
                .allow_client_broadcast(|_conn| true),
        )
        .await;
        let (client, mut inbox, mut reports) = member(&server, Client::builder()).await;
        client
            .subscribe_group("jobs.*", "workers")
            .await
            .expect("subscribe");
        client
            .publish("jobs.1", Blob { data: vec![1] })
            .await
            .expect("queued");
        let (code, message) = reports.recv().await.expect("a report");
        assert_eq!(
            (code, message.as_str()),
            (Code::InvalidArgument, "no blobs")
        );
        client.broadcast(note("all")).await.expect("queued");
        assert_eq!(inbox.recv().await.as_deref(), Some("all"));
        client
            .unsubscribe_group("jobs.*", "workers")
            .await
            .expect("unsubscribe");
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                "subscribe jobs.* Some(\"workers\") ",
                "publish jobs.1 None test.v1.Blob",
                "broadcast  None test.v1.Note",
                "unsubscribe jobs.* Some(\"workers\") ",
            ]
        );
        assert_eq!(refused(&server.server, "publish"), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_broadcast_flood_is_rate_limited_before_it_disconnects_anyone() {
    bounded(async {
        // Five broadcasts, then refusals; the flooder is closed with 1008 after three in a row.
        let server = start(
            Server::builder()
                .middleware(middleware::rate_limit(0.001, 5).close_after(3))
                .allow_client_broadcast(|_conn| true)
                .config(goomerang::Config::default().outbound_queue_bytes(64 << 10)),
        )
        .await;
        let (receiver, mut inbox, _) = member(&server, Client::builder()).await;
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        let flooder = server
            .connect(
                Client::builder()
                    .reconnect(None)
                    .on_disconnect(move |_conn, info| {
                        let _ = closed_tx.send(info.code);
                    }),
            )
            .await;
        for i in 0..200 {
            if flooder
                .broadcast(note(&format!("flood {i}")))
                .await
                .is_err()
            {
                break; // closed by the server
            }
        }
        assert_eq!(
            closed.recv().await,
            Some(1008),
            "the flooder is closed as a policy violation"
        );
        server
            .server
            .broadcast(note("sentinel"))
            .expect("broadcast");
        let mut flood = 0;
        loop {
            match inbox.recv().await.as_deref() {
                Some("sentinel") => break,
                Some(text) if text.starts_with("flood") => flood += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(flood, 5, "only the burst got through");
        assert!(
            receiver.connection().is_ok(),
            "the receiver is still connected"
        );
        // At least the refusals up to the close; how many more the flooder got in
        // before its connection went is a race, so only the lower bound is exact.
        assert!(refused(&server.server, "broadcast") >= 4);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_upgrades_with_a_slow_on_open_never_exceed_the_connection_limit() {
    const LIMIT: usize = 5;
    const TRIES: usize = 20;
    bounded(async {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let server = start(
            Server::builder()
                .config(goomerang::Config::default().max_connections(LIMIT))
                .on_open({
                    let release = Arc::clone(&release);
                    move |_hs| {
                        let (entered_tx, release) = (entered_tx.clone(), Arc::clone(&release));
                        async move {
                            let _ = entered_tx.send(());
                            release.acquire().await.expect("open").forget();
                            Ok(Accept::new())
                        }
                    }
                }),
        )
        .await;
        let (done_tx, mut done) = mpsc::unbounded_channel();
        for _ in 0..TRIES {
            let (url, done_tx) = (server.url(), done_tx.clone());
            tokio::spawn(async move {
                let _ = done_tx.send(Client::builder().connect(&url).await);
            });
        }
        // Every attempt beyond the limit is refused while the admitted ones wait in on_open.
        let mut clients = Vec::new();
        for _ in 0..TRIES - LIMIT {
            match done.recv().await.expect("an attempt ends") {
                Err(goomerang::Error::Refused {
                    status: 503,
                    reason,
                }) => {
                    assert_eq!(reason, "the server is at its connection limit")
                }
                other => panic!("expected 503 while {LIMIT} wait in on_open, got {other:?}"),
            }
        }
        for _ in 0..LIMIT {
            entered
                .recv()
                .await
                .expect("an admitted upgrade runs on_open");
        }
        release.add_permits(LIMIT);
        for _ in 0..LIMIT {
            clients.push(
                done.recv()
                    .await
                    .expect("an attempt ends")
                    .expect("admitted"),
            );
        }
        assert_eq!(server.server.connections().len(), LIMIT);
        // A slot comes back when a connection ends.
        let first = clients.pop().expect("a client");
        first.close().await.expect("close");
        let url = server.url();
        release.add_permits(1); // for the next on_open
        let again = loop {
            match Client::builder().connect(&url).await {
                Ok(client) => break client,
                Err(goomerang::Error::Refused { status: 503, .. }) => {
                    tokio::task::yield_now().await
                }
                Err(other) => panic!("{other}"),
            }
        };
        drop(again);
        server.stop().await;
    })
    .await;
}
