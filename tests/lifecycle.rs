//! Server and client lifecycle: NEW → RUNNING → CLOSING → CLOSED, typed errors for each misuse, reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goomerang::{Client, Code, Error, Initiator, Server, State, Status};
use goomerang_tests::*;
use tokio::net::TcpListener;

#[tokio::test]
async fn server_states_and_misuse_errors() {
    bounded(async {
        let states = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&states);
        let server = Server::builder()
            .on_state_change(move |s| seen.lock().expect("lock").push(s))
            .build()
            .expect("valid routes");
        assert_eq!(server.state(), State::New);
        assert!(server.addr().is_none());
        assert!(matches!(
            server.shutdown(Duration::from_secs(1)).await,
            Err(Error::NotRunning)
        ));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        // Wait for RUNNING by connecting, not by sleeping: connect retries only
        // until the accept loop is up, which `serve` sets before accepting.
        let (client_state_tx, mut client_states) = tokio::sync::mpsc::unbounded_channel();
        let client = loop {
            let tx = client_state_tx.clone();
            let builder = Client::builder().on_state_change(move |state| {
                let _ = tx.send(state);
            });
            match builder.connect(&format!("ws://{addr}/ws")).await {
                Ok(client) => break client,
                Err(Error::Refused { status: 503, .. }) => tokio::task::yield_now().await,
                Err(other) => panic!("connect: {other}"),
            }
        };
        assert_eq!(server.state(), State::Running);
        assert_eq!(server.addr(), Some(addr));

        let again = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        assert!(matches!(
            server.serve(again).await,
            Err(Error::AlreadyRunning)
        ));

        server
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        serving.await.expect("join").expect("serve returns Ok");
        assert_eq!(server.state(), State::Closed);
        assert!(matches!(
            server.shutdown(Duration::from_secs(1)).await,
            Err(Error::Closed)
        ));
        let third = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        assert!(matches!(server.serve(third).await, Err(Error::Closed)));
        assert_eq!(
            *states.lock().expect("lock"),
            [State::Running, State::Closing, State::Closed]
        );
        // The server closed the client's connection with 1001; its supervisor says so.
        while client_states
            .recv()
            .await
            .expect("the client reports its state")
            != State::Closed
        {}
        let conn = client.connection().err();
        assert!(matches!(conn, Some(Error::NotRunning)));
        assert_eq!(client.state(), State::Closed);
    })
    .await;
}

#[tokio::test]
async fn client_states_reconnect_and_misuse_errors() {
    bounded(async {
        let server = start(echo(Server::builder())).await;
        let states = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&states);
        let client = Client::builder()
            .on_state_change(move |s| seen.lock().expect("lock").push(s))
            .build()
            .expect("valid routes");
        assert_eq!(client.state(), State::New);
        assert!(matches!(
            client.send(Note::default()).await,
            Err(Error::NotRunning)
        ));
        let status = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("not connected");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(matches!(client.close().await, Err(Error::NotRunning)));

        client.connect(&server.url()).await.expect("connect");
        assert!(matches!(
            client.connect(&server.url()).await,
            Err(Error::AlreadyRunning)
        ));
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("works");
        client.close().await.expect("close");
        assert_eq!(client.state(), State::Closed);

        // CLOSED → RUNNING: the same client connects again.
        client.connect(&server.url()).await.expect("reconnect");
        let pong: Pong = client
            .request(Ping {
                n: 9,
                text: String::new(),
            })
            .await
            .expect("works")
            .into_inner();
        assert_eq!(pong.n, 9);
        client.close().await.expect("close");
        assert_eq!(
            *states.lock().expect("lock"),
            [
                State::Running,
                State::Closing,
                State::Closed,
                State::Running,
                State::Closing,
                State::Closed
            ]
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connect_errors_are_typed() {
    bounded(async {
        let bad = Client::builder()
            .build()
            .expect("valid routes")
            .connect("not a url")
            .await;
        assert!(matches!(bad, Err(Error::InvalidUrl { .. })), "{bad:?}");

        // A port nobody listens on: bind, learn the port, drop the listener.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let refused = Client::builder()
            .build()
            .expect("valid routes")
            .connect(&format!("ws://127.0.0.1:{port}/ws"))
            .await;
        assert!(matches!(refused, Err(Error::Connect(_))), "{refused:?}");

        let server = start(Server::builder()).await;
        let wrong_path = Client::builder()
            .build()
            .expect("valid routes")
            .connect(&format!("ws://{}/nope", server.addr))
            .await;
        assert!(
            matches!(wrong_path, Err(Error::Refused { status: 404, .. })),
            "{wrong_path:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn disconnect_hooks_say_who_closed_and_how() {
    bounded(async {
        let server_side = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&server_side);
        let connects = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&connects);
        let server = start(
            Server::builder()
                .on_connect(move |_| *counted.lock().expect("lock") += 1)
                .on_disconnect(move |_, info| seen.lock().expect("lock").push(info.clone())),
        )
        .await;
        let client_side = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&client_side);
        let client = server
            .connect(
                Client::builder()
                    .on_disconnect(move |_, info| seen.lock().expect("lock").push(info.clone())),
            )
            .await;
        let conn = client.connection().expect("connected");
        client.close().await.expect("close");
        let info = conn.close_info().expect("ended").clone();
        assert_eq!((info.code, info.initiator), (1000, Initiator::Local));
        assert_eq!(
            client_side.lock().expect("lock")[0].initiator,
            Initiator::Local
        );
        // The server's side ends too; wait for its hook without sleeping.
        while !server.server.connections().is_empty() {
            tokio::task::yield_now().await;
        }
        server.stop().await;
        let infos = server_side.lock().expect("lock").clone();
        assert_eq!(infos.len(), 1);
        assert_eq!(
            (infos[0].code, infos[0].initiator),
            (1000, Initiator::Remote)
        );
        assert_eq!(*connects.lock().expect("lock"), 1);
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_handlers_and_refuses_new_work() {
    bounded(async {
        let release = Arc::new(tokio::sync::Notify::new());
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (gate, done) = (Arc::clone(&release), Arc::clone(&finished));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .config(goomerang::Config::default().close_timeout(Duration::from_millis(300)))
                .request(move |_ctx, w: Work| {
                    let (gate, done, started) =
                        (Arc::clone(&gate), Arc::clone(&done), started_tx.clone());
                    async move {
                        if w.ms > 0 {
                            let _ = started.send(());
                            gate.notified().await;
                            done.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok::<_, Status>(Done { id: w.id })
                    }
                }),
        )
        .await;
        let slow = server.client().await;
        let other = server.client().await;
        // A raw peer that will never answer the close handshake.
        let silent = raw_peer(&server).await;
        let in_flight = tokio::spawn({
            let slow = slow.clone();
            async move { slow.request::<_, Done>(Work { ms: 1, id: 1 }).await }
        });
        // The slow handler is running before the shutdown starts.
        started.recv().await.expect("slow handler started");
        let shutting = tokio::spawn({
            let server = server.server.clone();
            async move { server.shutdown(Duration::from_secs(10)).await }
        });
        while server.server.state() != State::Closing {
            tokio::task::yield_now().await;
        }
        // New requests get a typed "shutting down" error.
        let refused = other
            .request::<_, Done>(Work { ms: 0, id: 2 })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(refused.message().contains("shutting down"), "{refused}");
        // New upgrades get 503.
        let late = Client::builder()
            .build()
            .expect("valid routes")
            .connect(&server.url())
            .await;
        assert!(
            matches!(late, Err(Error::Refused { status: 503, .. })),
            "{late:?}"
        );
        assert!(
            !shutting.is_finished(),
            "shutdown must wait for the in-flight handler"
        );
        release.notify_one();
        let reply = in_flight
            .await
            .expect("join")
            .expect("in-flight request completes");
        assert_eq!(reply.into_inner().id, 1);
        shutting
            .await
            .expect("join")
            .expect("clean shutdown despite the silent peer");
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(server.server.state(), State::Closed);
        assert!(server.server.connections().is_empty());
        drop(silent);
    })
    .await;
}

#[tokio::test]
async fn client_close_drains_its_handlers_and_the_server_keeps_running() {
    bounded(async {
        let server = start(echo(Server::builder())).await;
        let release = Arc::new(tokio::sync::Notify::new());
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::clone(&release);
        let client = server
            .connect(Client::builder().request(move |_ctx, w: Work| {
                let (gate, started) = (Arc::clone(&gate), started_tx.clone());
                async move {
                    let _ = started.send(());
                    gate.notified().await;
                    Ok::<_, Status>(Done { id: w.id })
                }
            }))
            .await;
        // The server asks the client; the client's handler is slow.
        let conn = server.server.connections().pop().expect("connection");
        let asking =
            tokio::spawn(async move { conn.request::<_, Done>(Work { ms: 0, id: 77 }).await });
        started.recv().await.expect("client handler started");
        let closing = tokio::spawn({
            let client = client.clone();
            async move { client.close().await }
        });
        while client.state() != State::Closing {
            tokio::task::yield_now().await;
        }
        assert!(
            !closing.is_finished(),
            "close waits for the in-flight handler"
        );
        release.notify_one();
        closing.await.expect("join").expect("clean close");
        assert_eq!(
            asking
                .await
                .expect("join")
                .expect("reply delivered before the close")
                .into_inner()
                .id,
            77
        );
        // The server is unaffected and serves a new client.
        assert_eq!(server.server.state(), State::Running);
        still_serving(&server).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn clients_connect_from_a_chosen_local_address() {
    bounded(async {
        let server = start(Server::builder().request(|ctx, p: Ping| async move {
            let peer = ctx.connection().peer_addr().expect("peer address");
            Ok::<_, Status>(Pong {
                n: p.n,
                text: peer.ip().to_string(),
            })
        }))
        .await;
        let local = "127.0.0.2".parse().expect("an address");
        let client = server.connect(Client::builder().local_address(local)).await;
        let pong: Pong = client
            .request(Ping {
                n: 1,
                text: String::new(),
            })
            .await
            .expect("reply")
            .into_inner();
        assert_eq!(pong.text, "127.0.0.2");
        // An address of the other family cannot reach an IPv4 server.
        let v6 = Client::builder()
            .reconnect(None)
            .local_address("::1".parse().expect("an address"))
            .connect(&server.url())
            .await;
        assert!(matches!(v6, Err(Error::Connect(_))), "{v6:?}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn callers_of_handlers_cut_off_by_the_shutdown_deadline_are_told_why() {
    bounded(async {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server::builder()
            .request(move |_ctx, _work: Work| {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(());
                    // Never finishes on its own.
                    std::future::pending::<Result<Done, Status>>().await
                }
            })
            .build()
            .expect("valid routes");
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        let client = Client::builder()
            .reconnect(None)
            .connect(&format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        let call = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .request::<_, Done>(
                        goomerang::Message::new(Work::default()).timeout(Duration::from_secs(25)),
                    )
                    .await
            }
        });
        started.recv().await.expect("the handler runs");
        let shutdown = server.shutdown(Duration::from_millis(200)).await;
        assert!(
            matches!(shutdown, Err(Error::ShutdownTimedOut { remaining: 1 })),
            "{shutdown:?}"
        );
        let status = call.await.expect("task").expect_err("cut off");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "the server shut down (200ms deadline) before this request's handler finished"
        );
        serving.await.expect("task").expect("serve returns");
    })
    .await;
}
