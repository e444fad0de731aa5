//! What handlers and servers can do beyond replying: close their own connection, keep
//! per-connection data that changes, report decode failures as such, serve until a signal,
//! and builders that report bad input instead of panicking.

use std::time::Duration;

use goomerang::{BuildError, Client, Error, Initiator, Server, State, Status};
use goomerang_tests::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_handler_closes_its_own_connection_with_a_code_and_reason() {
    bounded(async {
        let (tx, mut invalid) = mpsc::unbounded_channel();
        let server = start(Server::builder().message(move |ctx, note: Note| {
            let tx = tx.clone();
            async move {
                // A code no endpoint may send is refused, and nothing is closed.
                let refused = ctx.connection().close_with(1005, "no").await;
                let _ = tx.send(format!("{refused:?}"));
                ctx.connection()
                    .close_with(4001, &note.text)
                    .await
                    .expect("valid code");
            }
        }))
        .await;
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        let client = server
            .connect(
                Client::builder()
                    .reconnect(None)
                    .on_disconnect(move |_, info| {
                        let _ = closed_tx.send(info.clone());
                    }),
            )
            .await;
        client
            .send(Note {
                text: "kicked".into(),
            })
            .await
            .expect("send");
        assert_eq!(
            invalid.recv().await.expect("tried"),
            "Err(InvalidCloseCode(1005))"
        );
        let info = closed.recv().await.expect("closed");
        assert_eq!(info.code, 4001);
        assert_eq!(info.reason, "kicked");
        assert_eq!(info.initiator, Initiator::Remote);
        server.stop().await;
    })
    .await;
}

/// Rooms a connection joined, kept on the connection between messages.
#[derive(Clone, Debug, Default, PartialEq)]
struct Rooms(Vec<String>);

#[tokio::test]
async fn connection_data_changes_after_the_handshake() {
    bounded(async {
        let server = start(
            Server::builder()
                // In order: the request below sees both joins.
                .config(goomerang::Config::default().ordered(true))
                .message(|ctx, note: Note| async move {
                    ctx.connection()
                        .update_data(|rooms: &mut Rooms| rooms.0.push(note.text));
                })
                .request(|ctx, _ping: Ping| async move {
                    let rooms = ctx.connection().data::<Rooms>().unwrap_or_default();
                    Ok::<_, Status>(Pong {
                        n: rooms.0.len() as u64,
                        text: rooms.0.join(","),
                    })
                }),
        )
        .await;
        let first = server.client().await;
        let second = server.client().await;
        for room in ["a", "b"] {
            first.send(Note { text: room.into() }).await.expect("send");
        }
        let pong: Pong = first
            .request(Ping::default())
            .await
            .expect("ask")
            .into_inner();
        assert_eq!((pong.n, pong.text.as_str()), (2, "a,b"));
        // The other connection has its own data.
        let other: Pong = second
            .request(Ping::default())
            .await
            .expect("ask")
            .into_inner();
        assert_eq!((other.n, other.text.as_str()), (0, ""));
        let conn = first.connection().expect("connected");
        assert_eq!(conn.set_data(Rooms(vec!["x".into()])), None);
        assert_eq!(conn.remove_data::<Rooms>(), Some(Rooms(vec!["x".into()])));
        assert_eq!(conn.data::<Rooms>(), None);
        first.close().await.expect("close");
        second.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_reported_as_a_decode_error() {
    bounded(async {
        let (tx, mut errors) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .message(|_ctx, _note: Note| async {})
                .on_error(move |err, _| {
                    let _ = tx.send((err.kind(), err.to_string()));
                }),
        )
        .await;
        let mut peer = raw_peer(&server).await;
        let mut note = frame_for(wire::FrameKind::Message, 0, &Note::default());
        note.payload = bytes::Bytes::from_static(&[0x0a, 0x05, 0x61]);
        send_frame(&mut peer, &note).await;
        let (kind, message) = errors.recv().await.expect("reported");
        assert_eq!(kind, "decode", "{message}");
        assert!(message.contains("test.v1.Note"), "{message}");
        // Reported once, as a decode error, not a second time as a handler failure:
        // the next error is the sentinel's.
        send_frame(
            &mut peer,
            &frame_for(wire::FrameKind::Message, 0, &Pong::default()),
        )
        .await;
        let (kind, _) = errors.recv().await.expect("sentinel");
        assert_eq!(kind, "unknown_route");
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn serve_with_shutdown_stops_at_the_signal() {
    bounded(async {
        let server = echo(Server::builder()).build().expect("valid routes");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .serve_with_shutdown(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        let client = Client::builder()
            .reconnect(None)
            .connect(&format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        let pong: Pong = client
            .request(Ping::default())
            .await
            .expect("served")
            .into_inner();
        assert_eq!(pong.n, 0);
        let conn = client.connection().expect("connected");
        stop.send(()).expect("serving");
        serving.await.expect("task").expect("clean shutdown");
        assert_eq!(server.state(), State::Closed);
        conn.closed().await;
        let info = conn.close_info().expect("ended");
        assert_eq!((info.code, info.initiator), (1001, Initiator::Remote));
    })
    .await;
}

#[tokio::test]
async fn builders_report_mistakes_instead_of_panicking() {
    let err = Client::builder()
        .header("bad header", "v")
        .build()
        .expect_err("invalid name");
    assert!(
        matches!(&err, BuildError::InvalidHeader { name, .. } if name == "bad header"),
        "{err:?}"
    );
    let err = Client::builder()
        .header("x-ok", "line\nbreak")
        .connect("ws://127.0.0.1:1/ws")
        .await
        .expect_err("invalid value");
    assert!(
        matches!(&err, Error::Build(BuildError::InvalidHeader { .. })),
        "{err:?}"
    );
    let err = Server::builder()
        .request(|_ctx, p: Ping| async move {
            Ok::<_, Status>(Pong {
                n: p.n,
                text: p.text,
            })
        })
        .request(|_ctx, _p: Ping| async move { Ok::<_, Status>(Done::default()) })
        .build()
        .expect_err("two handlers for Ping");
    assert_eq!(
        err.to_string(),
        r#"a handler for message type "test.v1.Ping" is already registered"#
    );
    let err = Server::builder()
        .method("Stock.Adjust", |_ctx, p: Ping| async move {
            Ok::<_, Status>(Pong {
                n: p.n,
                text: p.text,
            })
        })
        .build()
        .expect_err("no slash");
    assert!(
        matches!(&err, BuildError::InvalidMethod { method, .. } if method == "Stock.Adjust"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_same_type_may_be_routed_by_type_and_by_method() {
    bounded(async {
        let server = start(echo(Server::builder()).method(
            "test.v1.Echo/Twice",
            |ctx, p: Ping| async move {
                // What the handler is told of the message routed by method.
                let metadata = ctx.metadata();
                Ok::<_, Status>(Pong {
                    n: p.n * 2,
                    text: format!("{:?} {}", metadata.method(), metadata.type_name()),
                })
            },
        ))
        .await;
        let client = server.client().await;
        let by_type: Pong = client
            .request(Ping {
                n: 4,
                text: String::new(),
            })
            .await
            .expect("by type")
            .into_inner();
        let by_method: Pong = client
            .request_method(
                "test.v1.Echo/Twice",
                Ping {
                    n: 4,
                    text: String::new(),
                },
            )
            .await
            .expect("by method")
            .into_inner();
        assert_eq!((by_type.n, by_method.n), (4, 8));
        assert_eq!(by_method.text, r#"Some("test.v1.Echo/Twice") test.v1.Ping"#);
        let missing = client
            .request_method::<_, Pong>("test.v1.Echo/Thrice", Ping::default())
            .await
            .expect_err("no such method");
        assert_eq!(missing.code(), goomerang::Code::Unimplemented);
        // A method called with another type than its input is refused.
        let mistyped = client
            .request_method::<_, Pong>("test.v1.Echo/Twice", Work::default())
            .await
            .expect_err("wrong input type");
        assert_eq!(mistyped.code(), goomerang::Code::InvalidArgument);
        assert_eq!(
            mistyped.message(),
            r#"method "test.v1.Echo/Twice" takes test.v1.Ping, not "test.v1.Work""#
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_server_with_nothing_to_drain_shuts_down_within_its_timeout() {
    // serve_with_shutdown uses Config::shutdown_timeout as the drain deadline.
    bounded(async {
        let server = Server::builder()
            .config(goomerang::Config::default().shutdown_timeout(Duration::from_millis(10)))
            .build()
            .expect("valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        server
            .serve_with_shutdown(listener, async {})
            .await
            .expect("clean");
        assert_eq!(server.state(), State::Closed);
    })
    .await;
}

#[tokio::test]
async fn frames_without_a_method_reach_the_only_method_taking_their_type() {
    bounded(async {
        let (heard_tx, mut heard) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .method("test.v1.Echo/Twice", |_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n * 2,
                        text: p.text,
                    })
                })
                .method("test.v1.Jobs/Start", |_ctx, w: Work| async move {
                    Ok::<_, Status>(Done { id: w.id })
                })
                .method("test.v1.Jobs/Retry", |_ctx, w: Work| async move {
                    Ok::<_, Status>(Done { id: w.id })
                }),
        )
        .await;
        let client = server
            .connect(Client::builder().one_way_method(
                "test.v1.Room/Announce",
                move |ctx: goomerang::Context, note: Note| {
                    let heard_tx = heard_tx.clone();
                    async move {
                        let method = ctx.metadata().method().map(str::to_owned);
                        let _ = heard_tx.send((note.text, method));
                    }
                },
            ))
            .await;
        // An untyped request finds the one method taking Ping.
        let pong: Pong = client
            .request(Ping {
                n: 3,
                text: String::new(),
            })
            .await
            .expect("by type, to the only method")
            .into_inner();
        assert_eq!(pong.n, 6);
        // A broadcast (never a method) reaches the client's one-way method for Note.
        assert_eq!(
            server
                .server
                .broadcast(Note {
                    text: "hello all".into()
                })
                .expect("broadcast"),
            1
        );
        assert_eq!(
            heard.recv().await.expect("heard"),
            ("hello all".to_owned(), None)
        );
        // Two methods take Work: without a method the server cannot choose.
        let err = client
            .request::<_, Done>(Work::default())
            .await
            .expect_err("ambiguous");
        assert_eq!(err.code(), goomerang::Code::Unimplemented);
        assert!(
            err.message()
                .contains("methods test.v1.Jobs/Retry, test.v1.Jobs/Start all take it"),
            "{err}"
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_handler_sets_headers_on_its_reply_to_the_server() {
    bounded(async {
        let server = start(Server::builder()).await;
        let client = server
            .connect(Client::builder().method(
                "test.v1.Member/Ask",
                |ctx: goomerang::Context, p: Ping| async move {
                    ctx.set_reply_header("x-member", "ada");
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                },
            ))
            .await;
        let conn = server.server.connections().pop().expect("one connection");
        let response = conn
            .request_method::<_, Pong>(
                "test.v1.Member/Ask",
                goomerang::Message::new(Ping::default()),
            )
            .await
            .expect("answered");
        assert_eq!(
            response.headers().get("x-member").map(String::as_str),
            Some("ada")
        );
        assert_eq!(response.metadata().type_name(), "test.v1.Pong");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
