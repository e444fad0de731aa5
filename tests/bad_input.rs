//! Bad input from a peer: each gets a clear error and outcome, and the server keeps serving everyone else.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt as _;
use goomerang::{Client, Code, Config, Error, Initiator, Server};
use goomerang_tests::wire::{Frame, FrameKind, Status as WireStatus};
use goomerang_tests::*;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A server with a Ping handler that reports errors and disconnects on channels.
async fn observed_server(
    config: Config,
) -> (
    TestServer,
    mpsc::UnboundedReceiver<String>,
    mpsc::UnboundedReceiver<goomerang::CloseInfo>,
) {
    let (err_tx, errors) = mpsc::unbounded_channel();
    let (close_tx, closes) = mpsc::unbounded_channel();
    let server = start(echo(
        Server::builder()
            .config(config)
            .on_error(move |err, _| {
                let _ = err_tx.send(err.to_string());
            })
            .on_disconnect(move |_, info| {
                let _ = close_tx.send(info.clone());
            }),
    ))
    .await;
    (server, errors, closes)
}

/// The raw peer's connection still answers a request (id `id`).
async fn assert_still_answers(peer: &mut RawPeer, id: u64) {
    let ping = Ping {
        n: id,
        text: String::new(),
    };
    send_frame(peer, &frame_for(FrameKind::Request, id, &ping)).await;
    let reply = recv_frame(peer).await;
    assert_eq!((reply.kind, reply.id), (FrameKind::Reply as i32, id));
}

async fn expect_close(server: TestServer, message: WsMessage, code: u16, error_part: &str) {
    let mut peer = raw_peer(&server).await;
    peer.send(message).await.expect("raw send");
    let (got, reason) = recv_close(&mut peer).await;
    assert_eq!(got, code, "reason: {reason}");
    assert!(
        reason.contains(error_part),
        "{reason:?} should mention {error_part:?}"
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn text_frames_close_with_1003() {
    bounded(async {
        let (server, mut errors, mut closes) = observed_server(Config::default()).await;
        let mut peer = raw_peer(&server).await;
        peer.send(WsMessage::Text("hello".into()))
            .await
            .expect("send");
        let (code, reason) = recv_close(&mut peer).await;
        assert_eq!(code, 1003);
        assert!(reason.contains("text frames"), "{reason}");
        assert!(
            errors
                .recv()
                .await
                .expect("reported")
                .contains("protocol violation")
        );
        let info = closes.recv().await.expect("disconnect hook");
        assert_eq!((info.code, info.initiator), (1003, Initiator::Local));
        still_serving(&server).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn undecodable_frames_close_with_1007() {
    bounded(async {
        let (server, ..) = observed_server(Config::default()).await;
        let garbage = WsMessage::Binary(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]));
        expect_close(server, garbage, 1007, "undecodable").await;
    })
    .await;
}

/// A frame of `kind` and `id` whose type name (and method, if any) are
/// these bytes, encoded by hand: prost's own types hold only valid UTF-8.
fn frame_with_names(kind: FrameKind, id: u64, type_name: &[u8], method: &[u8]) -> WsMessage {
    let mut bytes = vec![0x08, kind as u8, 0x10];
    prost::encoding::encode_varint(id, &mut bytes);
    for (tag, name) in [(0x1a, type_name), (0x5a, method)] {
        if !name.is_empty() {
            bytes.push(tag);
            prost::encoding::encode_varint(name.len() as u64, &mut bytes);
            bytes.extend_from_slice(name);
        }
    }
    WsMessage::Binary(Bytes::from(bytes))
}

#[tokio::test]
async fn a_type_name_that_is_not_utf8_closes_with_1007_whatever_the_frame() {
    bounded(async {
        let bad = b"test.v1.\xffPing";
        let cases = [
            // Routed by type and by method (neither finds a route).
            (FrameKind::Message, 0, &b""[..]),
            (FrameKind::Request, 5, &b""[..]),
            (FrameKind::Request, 6, &b"test.v1.Echo/Ping"[..]),
            // Broken in another way too: the undecodable frame is what is reported.
            (FrameKind::Message, 7, &b""[..]),
            (FrameKind::Request, 0, &b""[..]),
            (FrameKind::Reply, 9, &b""[..]),
            (FrameKind::Subscribe, 10, &b""[..]),
        ];
        for (kind, id, method) in cases {
            let (server, ..) = observed_server(Config::default()).await;
            let message = frame_with_names(kind, id, bad, method);
            expect_close(server, message, 1007, "the type name is not UTF-8").await;
        }
        // Both names broken: the type name is reported, as for prost.
        let (server, ..) = observed_server(Config::default()).await;
        let message = frame_with_names(FrameKind::Request, 3, bad, b"test.v1.\xffEcho/Ping");
        expect_close(server, message, 1007, "the type name is not UTF-8").await;
        // A broken method alone.
        let (server, ..) = observed_server(Config::default()).await;
        let message = frame_with_names(FrameKind::Request, 4, b"test.v1.Ping", b"\xff/x");
        expect_close(server, message, 1007, "the method is not UTF-8").await;
    })
    .await;
}

#[tokio::test]
async fn unknown_frame_kinds_close_with_1002() {
    bounded(async {
        let (server, ..) = observed_server(Config::default()).await;
        let frame = Frame {
            kind: 99,
            ..Frame::default()
        };
        let bytes = WsMessage::Binary(Bytes::from(prost::Message::encode_to_vec(&frame)));
        expect_close(server, bytes, 1002, "unknown frame kind 99").await;
    })
    .await;
}

#[tokio::test]
async fn requests_with_id_zero_close_with_1002() {
    bounded(async {
        let (server, ..) = observed_server(Config::default()).await;
        let frame = frame_for(FrameKind::Request, 0, &Ping::default());
        let bytes = WsMessage::Binary(Bytes::from(prost::Message::encode_to_vec(&frame)));
        expect_close(server, bytes, 1002, "id 0").await;
    })
    .await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    bounded(async {
        let (server, ..) = observed_server(Config::default().max_message_size(1024)).await;
        let big = frame_for(
            FrameKind::Message,
            0,
            &Blob {
                data: vec![7; 4096],
            },
        );
        let bytes = WsMessage::Binary(Bytes::from(prost::Message::encode_to_vec(&big)));
        expect_close(server, bytes, 1009, "1024 byte limit").await;
    })
    .await;
}

#[tokio::test]
async fn default_limit_rejects_sixteen_mebibytes() {
    bounded(async {
        // The server refuses as soon as it reads the frame header, so the
        // sender may see a reset before it finishes writing: assert on the
        // server's side.
        let (server, mut errors, mut closes) = observed_server(Config::default()).await;
        let mut peer = raw_peer(&server).await;
        let _ = peer
            .send(WsMessage::Binary(Bytes::from(vec![0u8; 16 << 20])))
            .await;
        let error = errors.recv().await.expect("reported");
        assert!(
            error.contains("closing with 1009") && error.contains("4194304 byte limit"),
            "{error}"
        );
        drop(peer);
        assert!(closes.recv().await.is_some());
        still_serving(&server).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn undecodable_payloads_get_invalid_argument() {
    bounded(async {
        let (server, ..) = observed_server(Config::default()).await;
        let mut peer = raw_peer(&server).await;
        let mut frame = frame_for(FrameKind::Request, 7, &Ping::default());
        frame.payload = Bytes::from_static(&[0x0a, 0xff]); // field 1 as bytes, truncated
        send_frame(&mut peer, &frame).await;
        let reply = recv_frame(&mut peer).await;
        assert_eq!((reply.kind, reply.id), (FrameKind::Error as i32, 7));
        let status = reply.status.expect("status");
        assert_eq!(status.code, Code::InvalidArgument as u32);
        assert!(
            status.message.contains("test.v1.Ping"),
            "{}",
            status.message
        );
        // The same connection keeps working.
        assert_still_answers(&mut peer, 8).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn replies_to_unknown_ids_are_reported_and_dropped() {
    bounded(async {
        let (server, mut errors, _) = observed_server(Config::default()).await;
        let mut peer = raw_peer(&server).await;
        send_frame(
            &mut peer,
            &frame_for(FrameKind::Reply, 12345, &Pong::default()),
        )
        .await;
        let error = Frame {
            kind: FrameKind::Error as i32,
            id: 999,
            status: Some(WireStatus {
                code: 2,
                message: "late".into(),
            }),
            ..Frame::default()
        };
        send_frame(&mut peer, &error).await;
        assert!(
            errors
                .recv()
                .await
                .expect("reported")
                .contains("unknown request id 12345")
        );
        assert!(
            errors
                .recv()
                .await
                .expect("reported")
                .contains("unknown request id 999")
        );
        assert_still_answers(&mut peer, 1).await;
        drop(peer);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_answered_twice_yields_the_first_reply_only() {
    bounded(async {
        let server = start(Server::builder()).await;
        let (tx, mut errors) = mpsc::unbounded_channel();
        // A client whose server is a raw peer that answers twice.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = tokio::spawn(async move {
            let mut ws = accept_raw(&listener).await;
            let request = loop {
                match futures_util::StreamExt::next(&mut ws).await {
                    Some(Ok(WsMessage::Binary(b))) => {
                        break prost::Message::decode(b).map(|f: Frame| f).expect("frame");
                    }
                    _ => continue,
                }
            };
            for n in [1, 2] {
                let reply = frame_for(
                    FrameKind::Reply,
                    request.id,
                    &Pong {
                        n,
                        text: String::new(),
                    },
                );
                ws.send(WsMessage::Binary(Bytes::from(
                    prost::Message::encode_to_vec(&reply),
                )))
                .await
                .expect("send");
            }
            ws
        });
        let client = Client::builder()
            .on_error(move |err, _| {
                let _ = tx.send(err.to_string());
            })
            .connect(&format!("ws://{addr}/"))
            .await
            .expect("connect");
        let pong: Pong = client
            .request(Ping::default())
            .await
            .expect("first reply")
            .into_inner();
        assert_eq!(pong.n, 1);
        assert!(
            errors
                .recv()
                .await
                .expect("second reported")
                .contains("unknown request id")
        );
        drop(fake.await.expect("fake server"));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn abrupt_disconnects_are_clean_and_do_not_spin() {
    bounded(async {
        let (server, _errors, mut closes) = observed_server(Config::default()).await;
        // The tasks alive with no connection: whatever a peer starts must end with it.
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let idle = tasks();
        // 1) a peer that closes with 1001 (going away)
        let mut peer = raw_peer(&server).await;
        peer.close(Some(CloseFrame {
            code: 1001.into(),
            reason: "bye".into(),
        }))
        .await
        .expect("close");
        let info = closes.recv().await.expect("hook");
        assert_eq!(
            (info.code, info.reason.as_str(), info.initiator),
            (1001, "bye", Initiator::Remote)
        );

        // 2) a peer whose TCP connection just vanishes (no close frame)
        let peer = raw_peer(&server).await;
        drop(peer);
        let info = closes.recv().await.expect("hook");
        assert_eq!((info.code, info.initiator), (1006, Initiator::Lost));

        // 3) a peer that dies mid-handshake: raw bytes, then reset
        let mut tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("tcp");
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .await
            .expect("write");
        drop(tcp);

        still_serving(&server).await;
        // No task keeps running (spinning, or waiting on a dead peer): the count
        // comes back to what it was. Each check waits a scheduler turn.
        while tasks() > idle {
            tokio::task::yield_now().await;
        }
        assert!(server.server.connections().is_empty());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn plain_http_to_the_websocket_path_gets_426() {
    bounded(async {
        let server = start(Server::builder()).await;
        let response = http_get(server.addr, "/ws").await;
        assert!(response.starts_with("HTTP/1.1 426"), "{response}");
        assert!(
            response.contains("goomerang WebSocket endpoint"),
            "{response}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn foreign_subprotocols_are_refused() {
    bounded(async {
        let server = start(Server::builder()).await;
        match tokio_tungstenite::connect_async(upgrade_request(&server, "mqtt")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400)
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
        server.stop().await;
    })
    .await;
}

// The clock is paused: it only moves when every task (the server's too) is
// waiting and no socket has anything to read. So the flooder's two-second
// timeout fires exactly when the server has stopped reading it and nothing
// else can happen; no wall-clock quiet period decides that.
#[tokio::test(start_paused = true)]
async fn a_flood_from_a_peer_that_never_reads_stays_bounded_and_isolated() {
    bounded(async {
        // Every unknown-type message earns an ERROR frame back; the flooder
        // never reads them. With a 4 KiB outbound budget the server must stop
        // reading from that peer (backpressure) rather than queue without end.
        const BUDGET: u64 = 4096;
        let (server, _errors, mut closes) =
            observed_server(Config::default().outbound_queue_bytes(BUDGET as usize)).await;
        let mut flooder = raw_peer(&server).await;
        let mut junk = frame_for(
            FrameKind::Message,
            0,
            &Note {
                text: "x".repeat(200),
            },
        );
        // A long type name makes each ERROR reply ~1 KiB, so the replies
        // outgrow the kernel's loopback buffers quickly.
        junk.r#type = format!("nobody.{}", "x".repeat(1000));
        let bytes = Bytes::from(prost::Message::encode_to_vec(&junk));
        let sent = {
            // Bounded: 50k frames (~61 MB) or until writing stalls for good.
            let mut sent = 0u32;
            while sent < 50_000 {
                let send = flooder.send(WsMessage::Binary(bytes.clone()));
                if tokio::time::timeout(Duration::from_secs(2), send)
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
            sent
        };
        assert!(
            sent < 50_000,
            "the server kept reading a peer it could not answer"
        );
        // Stalled: the queue holds at most its budget plus the one reply
        // that found it under budget.
        let queued = queued_bytes(&server.server);
        assert!(
            queued <= BUDGET + 1100,
            "{queued} bytes queued with a {BUDGET}-byte budget"
        );
        // Others are served while the flooder's connection is stuck.
        still_serving(&server).await;
        // Going away unblocks the reader that waits for room in its queue:
        // the connection closes and its queue is released.
        drop(flooder);
        // (The first `still_serving` client closed normally, with 1000.)
        let closed = loop {
            let info = closes.recv().await.expect("the flooder's close");
            if info.code != 1000 {
                break info;
            }
        };
        assert_eq!(closed.code, 1006, "{closed:?}");
        assert_eq!(queued_bytes(&server.server), 0);
        still_serving(&server).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn clients_reject_server_only_frames() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = tokio::spawn(async move {
            let mut ws = accept_raw(&listener).await;
            let publish = Frame {
                kind: FrameKind::Publish as i32,
                topic: "t".into(),
                ..Frame::default()
            };
            ws.send(WsMessage::Binary(Bytes::from(
                prost::Message::encode_to_vec(&publish),
            )))
            .await
            .expect("send");
            recv_close(&mut ws).await
        });
        let client = Client::builder()
            .connect(&format!("ws://{addr}/"))
            .await
            .expect("connect");
        let conn = client.connection().expect("connected");
        let (code, reason) = fake.await.expect("fake");
        conn.closed().await;
        let info = conn.close_info().expect("ended");
        assert_eq!((info.code, info.initiator), (1002, Initiator::Local));
        assert_eq!(code, 1002);
        assert!(reason.contains("client to server only"), "{reason}");
        client
            .connection()
            .expect_err("closed by the protocol violation");
        // The client is reconnecting (the default policy); close stops that.
        client.close().await.expect("stops reconnecting");
        assert!(matches!(client.close().await, Err(Error::NotRunning)));
    })
    .await;
}
