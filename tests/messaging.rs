//! One-way sends and request/reply in both directions, headers, metadata, status errors, unknown types.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goomerang::{Client, Code, Error, Incident, Message, Server, Status};
use goomerang_tests::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn client_to_server_one_way_carries_headers_and_metadata() {
    bounded(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = start(Server::builder().message(move |ctx, note: Note| {
            let tx = tx.clone();
            async move {
                let meta = ctx.metadata();
                tx.send((
                    note.text,
                    ctx.header("who").map(str::to_owned),
                    meta.type_name().to_owned(),
                    meta.size(),
                    meta.correlation_id(),
                    meta.created().is_some(),
                ))
                .expect("test alive");
            }
        }))
        .await;
        let client = server.client().await;
        client
            .send(Message::new(Note { text: "hi".into() }).header("who", "ada"))
            .await
            .expect("send");
        let got = rx.recv().await.expect("handled");
        assert_eq!(
            got,
            (
                "hi".into(),
                Some("ada".into()),
                "test.v1.Note".into(),
                4,
                0,
                true
            )
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn request_reply_client_to_server() {
    bounded(async {
        let server = start(Server::builder().request(|ctx, ping: Ping| async move {
            assert!(ctx.metadata().is_request());
            Ok::<_, Status>(Pong {
                n: ping.n * 2,
                text: ping.text,
            })
        }))
        .await;
        let client = server.client().await;
        for n in 1..=50u64 {
            let reply = client
                .request::<_, Pong>(Ping {
                    n,
                    text: "x".into(),
                })
                .await
                .expect("reply");
            assert_eq!(reply.metadata().type_name(), "test.v1.Pong");
            assert_ne!(reply.metadata().correlation_id(), 0);
            assert_eq!(reply.into_inner().n, n * 2);
        }
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn server_to_client_one_way_and_request() {
    bounded(async {
        // The server handles a Note by asking the client (a server → client
        // request), then tells the client the answer with a one-way send.
        let server = start(Server::builder().message(|ctx, note: Note| async move {
            let conn = ctx.connection();
            let pong: Pong = conn
                .request(Ping {
                    n: 20,
                    text: note.text,
                })
                .await?
                .into_inner();
            conn.send(Done { id: pong.n }).await.map_err(Status::from)?;
            Ok::<_, Status>(())
        }))
        .await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client = server
            .connect(
                Client::builder()
                    .request(|_ctx, ping: Ping| async move {
                        Ok::<_, Status>(Pong {
                            n: ping.n + 1,
                            text: ping.text,
                        })
                    })
                    .message(move |_ctx, done: Done| {
                        let tx = tx.clone();
                        async move { tx.send(done.id).expect("test alive") }
                    }),
            )
            .await;
        client.send(Note { text: "go".into() }).await.expect("send");
        assert_eq!(rx.recv().await, Some(21));

        // The server can also address a connection from outside any handler.
        let conn = server.server.connections().pop().expect("one connection");
        assert!(conn.peer_addr().is_some());
        let pong: Pong = conn
            .request(Ping {
                n: 1,
                text: String::new(),
            })
            .await
            .expect("client answers")
            .into_inner();
        assert_eq!(pong.n, 2);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn handler_status_errors_reach_the_caller() {
    bounded(async {
        let server = start(Server::builder().request(|_ctx, ping: Ping| async move {
            if ping.n == 0 {
                Err(Status::invalid_argument("n must be positive"))
            } else {
                Ok(Pong::default())
            }
        }))
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("fails");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "n must be positive");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn request_to_unknown_type_gets_unimplemented_at_once() {
    bounded(async {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        let server = start(Server::builder().on_error(move |err, _| {
            seen.lock().expect("lock").push(err.to_string());
        }))
        .await;
        let client = server.client().await;
        let started = std::time::Instant::now();
        let err = client
            .request::<_, Pong>(Message::new(Ping::default()).timeout(Duration::from_secs(20)))
            .await
            .expect_err("unimplemented");
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("test.v1.Ping"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "must not wait for the deadline"
        );
        assert!(errors.lock().expect("lock")[0].contains("no handler"));
        // The connection is still usable.
        assert!(client.connection().is_ok());
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_way_to_unknown_type_is_reported_to_the_sender() {
    bounded(async {
        let server = start(Server::builder()).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client = server
            .connect(Client::builder().on_error(move |err, _| {
                if let Incident::Remote {
                    type_name,
                    method,
                    status,
                    ..
                } = err
                {
                    tx.send((type_name.clone(), method.clone(), status.clone()))
                        .expect("test alive");
                }
            }))
            .await;
        client.send(Note::default()).await.expect("send");
        let (type_name, method, status) = rx.recv().await.expect("reported");
        assert_eq!(status.code(), Code::Unimplemented);
        // The report names the message it answers.
        assert_eq!(type_name, "test.v1.Note");
        assert_eq!(method, "");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn request_to_a_one_way_handler_is_answered_not_hung() {
    bounded(async {
        let server = start(Server::builder().message(|_ctx, _note: Note| async {})).await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Note::default())
            .await
            .expect_err("no reply type");
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("one-way"), "{err}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_reply_type_is_an_internal_error() {
    bounded(async {
        let server = start(
            Server::builder()
                .request(|_ctx, _ping: Ping| async { Ok::<_, Status>(Done { id: 1 }) }),
        )
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("type mismatch");
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("test.v1.Done"), "{err}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_outbound_message_fails_locally_and_connection_survives() {
    bounded(async {
        let server = start(Server::builder().request(|_ctx, ping: Ping| async move {
            Ok::<_, Status>(Pong {
                n: ping.n,
                text: String::new(),
            })
        }))
        .await;
        let client = server
            .connect(Client::builder().config(goomerang::Config::default().max_message_size(1024)))
            .await;
        let err = client
            .send(Blob {
                data: vec![0; 4096],
            })
            .await
            .expect_err("too large");
        assert!(
            matches!(err, Error::MessageTooLarge { max: 1024, .. }),
            "{err}"
        );
        let pong: Pong = client
            .request(Ping {
                n: 7,
                text: String::new(),
            })
            .await
            .expect("still works")
            .into_inner();
        assert_eq!(pong.n, 7);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
