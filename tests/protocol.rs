//! PROTOCOL.md's answering rules, one test per rule: exactly one answer per request id, ids in
//! MESSAGE frames, CANCEL for unknown ids, ERROR id 0 naming the one-way message, routing by
//! method, `timeout_ms` 0, and version negotiation through the subprotocol.

use bytes::Bytes;
use goomerang::{Code, Server, Status};
use goomerang_tests::wire::{Frame, FrameKind};
use goomerang_tests::*;

/// A server with the echo handler, a `Work` handler that runs until it is
/// cancelled, one-way handlers for `Note` by type and by method, and a `Seq`
/// handler saying whether its request came with a deadline.
async fn server() -> TestServer {
    start(
        echo(Server::builder())
            .request(|ctx, _work: Work| async move {
                ctx.cancelled().await;
                Ok::<_, Status>(Done { id: 0 })
            })
            .message(|_ctx, _note: Note| async {})
            .one_way_method("test.v1.Notes/Post", |_ctx, _note: Note| async {})
            .request(|ctx, _seq: Seq| async move {
                Ok::<_, Status>(Seq {
                    n: u64::from(ctx.deadline().is_some()),
                })
            }),
    )
    .await
}

fn raw(kind: FrameKind, id: u64, type_name: &str, method: &str, payload: Bytes) -> Frame {
    Frame {
        kind: kind as i32,
        id,
        r#type: type_name.into(),
        method: method.into(),
        payload,
        ..Frame::default()
    }
}

fn ping(id: u64) -> Frame {
    frame_for(FrameKind::Request, id, &Ping::default())
}

/// The next frame is the REPLY to `id`.
async fn expect_reply(peer: &mut RawPeer, id: u64) -> Frame {
    let frame = recv_frame(peer).await;
    assert_eq!(
        (frame.kind, frame.id),
        (FrameKind::Reply as i32, id),
        "{frame:?}"
    );
    frame
}

#[tokio::test]
async fn a_request_reusing_an_id_in_flight_closes_with_1002_and_neither_is_answered() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        send_frame(
            &mut peer,
            &frame_for(FrameKind::Request, 7, &Work::default()),
        )
        .await;
        send_frame(&mut peer, &ping(7)).await;
        // recv_close fails on any frame before the close: neither request is answered.
        let mut answers = Vec::new();
        let (code, reason) = loop {
            match futures_util::StreamExt::next(&mut peer).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) => {
                    answers.push(bytes)
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(close)))) => {
                    break (u16::from(close.code), close.reason.to_string());
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, 1002, "{reason}");
        assert!(reason.contains("id 7"), "{reason}");
        assert!(
            answers.is_empty(),
            "no answer for either request: {answers:?}"
        );
        still_serving(&server).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_id_may_be_reused_and_gets_one_answer() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        send_frame(
            &mut peer,
            &frame_for(FrameKind::Request, 9, &Work::default()),
        )
        .await;
        send_frame(&mut peer, &raw(FrameKind::Cancel, 9, "", "", Bytes::new())).await;
        send_frame(&mut peer, &ping(9)).await;
        let reply = expect_reply(&mut peer, 9).await;
        assert_eq!(reply.r#type, "test.v1.Pong");
        // A sentinel: the next frame answers it, so nothing else came for id 9.
        send_frame(&mut peer, &ping(10)).await;
        expect_reply(&mut peer, 10).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_with_a_nonzero_id_closes_with_1002() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        send_frame(
            &mut peer,
            &frame_for(FrameKind::Message, 3, &Note::default()),
        )
        .await;
        let (code, reason) = recv_close(&mut peer).await;
        assert_eq!(code, 1002);
        assert!(reason.contains("MESSAGE frame with id 3"), "{reason}");
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_cancel_for_an_unknown_id_is_ignored() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        for id in [0, 42] {
            send_frame(&mut peer, &raw(FrameKind::Cancel, id, "", "", Bytes::new())).await;
        }
        // The next frame is the answer to this request: no ERROR, no close.
        send_frame(&mut peer, &ping(1)).await;
        expect_reply(&mut peer, 1).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

/// Sends a one-way frame and returns the ERROR (id 0) it earned.
async fn one_way_error(type_name: &str, method: &str, payload: &'static [u8]) -> Frame {
    let server = server().await;
    let mut peer = raw_peer(&server).await;
    let frame = raw(
        FrameKind::Message,
        0,
        type_name,
        method,
        Bytes::from_static(payload),
    );
    send_frame(&mut peer, &frame).await;
    let error = recv_frame(&mut peer).await;
    assert_eq!((error.kind, error.id), (FrameKind::Error as i32, 0));
    // The connection carries on.
    send_frame(&mut peer, &ping(1)).await;
    expect_reply(&mut peer, 1).await;
    drop(peer);
    server.stop().await;
    error
}

/// A payload that is not a valid protobuf message (a truncated field).
const GARBAGE: &[u8] = &[0x0a, 0x05, 0x61];

#[tokio::test]
async fn a_one_way_payload_that_does_not_decode_is_reported_naming_it() {
    bounded(async {
        let by_type = one_way_error("test.v1.Note", "", GARBAGE).await;
        assert_eq!(by_type.r#type, "test.v1.Note");
        assert_eq!(by_type.method, "");
        let status = by_type.status.expect("status");
        assert_eq!(status.code, Code::InvalidArgument as u32);
        assert!(status.message.contains("does not decode"), "{status:?}");

        let by_method = one_way_error("test.v1.Note", "test.v1.Notes/Post", GARBAGE).await;
        assert_eq!(by_method.r#type, "test.v1.Note");
        assert_eq!(by_method.method, "test.v1.Notes/Post");
        assert_eq!(
            by_method.status.expect("status").code,
            Code::InvalidArgument as u32
        );
    })
    .await;
}

#[tokio::test]
async fn a_one_way_message_to_an_unknown_method_is_reported_naming_it() {
    bounded(async {
        let error = one_way_error("test.v1.Note", "test.v1.Notes/Nope", b"").await;
        assert_eq!(error.r#type, "test.v1.Note");
        assert_eq!(error.method, "test.v1.Notes/Nope");
        let status = error.status.expect("status");
        assert_eq!(status.code, Code::Unimplemented as u32);
        assert!(status.message.contains("test.v1.Notes/Nope"), "{status:?}");
    })
    .await;
}

#[tokio::test]
async fn a_one_way_message_of_the_wrong_type_for_its_method_is_reported() {
    bounded(async {
        let error = one_way_error("test.v1.Ping", "test.v1.Notes/Post", b"").await;
        assert_eq!(error.method, "test.v1.Notes/Post");
        let status = error.status.expect("status");
        assert_eq!(status.code, Code::InvalidArgument as u32);
        assert!(status.message.contains("takes test.v1.Note"), "{status:?}");
    })
    .await;
}

#[tokio::test]
async fn timeout_ms_zero_means_no_deadline() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        let mut request = frame_for(FrameKind::Request, 1, &Seq::default());
        send_frame(&mut peer, &request).await;
        let reply = expect_reply(&mut peer, 1).await;
        let has_deadline: Seq = prost::Message::decode(reply.payload).expect("seq");
        assert_eq!(has_deadline.n, 0, "timeout_ms 0: no deadline");
        request.id = 2;
        request.timeout_ms = 5_000;
        send_frame(&mut peer, &request).await;
        let reply = expect_reply(&mut peer, 2).await;
        let has_deadline: Seq = prost::Message::decode(reply.payload).expect("seq");
        assert_eq!(has_deadline.n, 1, "timeout_ms 5000: a deadline");
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_offering_a_newer_version_first_gets_v1_selected() {
    bounded(async {
        let server = server().await;
        let request = upgrade_request(&server, "goomerang.v2, goomerang.v1");
        let (mut peer, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("upgrade");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii")),
            Some("goomerang.v1")
        );
        send_frame(&mut peer, &ping(1)).await;
        expect_reply(&mut peer, 1).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_offering_only_a_newer_version_is_told_which_one_the_server_speaks() {
    bounded(async {
        let server = server().await;
        match tokio_tungstenite::connect_async(upgrade_request(&server, "goomerang.v2")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400);
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(body.contains("goomerang.v1"), "{body}");
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_to_a_request_handler_runs_it_and_sends_nothing_back() {
    bounded(async {
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&runs);
        let server = start(echo(Server::builder()).request(move |_ctx, work: Work| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok::<_, Status>(Done { id: work.id }) }
        }))
        .await;
        let mut peer = raw_peer(&server).await;
        send_frame(
            &mut peer,
            &frame_for(FrameKind::Message, 0, &Work::default()),
        )
        .await;
        // The sentinel's reply is the next frame: the MESSAGE got no answer.
        send_frame(&mut peer, &ping(1)).await;
        expect_reply(&mut peer, 1).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(peer);
        server.stop().await;
    })
    .await;
}

/// A hand-written server that answers the upgrade with `selected` as the
/// subprotocol (or none), for the client's side of the negotiation.
async fn client_against(selected: Option<&'static str>) -> goomerang::Error {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
        let answer =
            move |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                  mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                if let Some(selected) = selected {
                    response.headers_mut().insert(
                        "sec-websocket-protocol",
                        selected.parse().expect("header"),
                    );
                }
                Ok(response)
            };
        let _ = tokio_tungstenite::accept_hdr_async(tcp, answer).await;
    });
    let err = goomerang::Client::builder()
        .reconnect(None)
        .connect(&format!("ws://{addr}/ws"))
        .await
        .expect_err("refused by the client");
    serving.abort();
    err
}

#[tokio::test]
async fn the_client_refuses_a_server_that_selects_no_version_or_one_it_did_not_offer() {
    bounded(async {
        for selected in [None, Some("goomerang.v2")] {
            let err = client_against(selected).await;
            assert!(
                matches!(
                    &err,
                    goomerang::Error::Connect(tokio_tungstenite::tungstenite::Error::Protocol(
                        tokio_tungstenite::tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_)
                    ))
                ),
                "{selected:?}: {err:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_unsubscribe_from_nothing_is_acknowledged_so_browsers_can_probe_with_it() {
    bounded(async {
        let server = server().await;
        let mut peer = raw_peer(&server).await;
        let probe = Frame {
            kind: FrameKind::Unsubscribe as i32,
            id: 9,
            topic: "goomerang.keepalive.probe".into(),
            ..Frame::default()
        };
        send_frame(&mut peer, &probe).await;
        let reply = expect_reply(&mut peer, 9).await;
        assert_eq!((reply.r#type.as_str(), reply.payload.len()), ("", 0));
        // Again: still an acknowledgement, never an error.
        send_frame(&mut peer, &Frame { id: 10, ..probe }).await;
        expect_reply(&mut peer, 10).await;
    })
    .await;
}
