//! Topic history: positions on delivered messages, recovery on subscribe and after a reconnection, and what cannot be recovered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goomerang::pubsub::{History, Position, Recovery};
use goomerang::{BuildError, Client, Code, Incident, Reconnect, Server};
use goomerang_tests::wire::FrameKind;
use goomerang_tests::*;
use tokio::sync::mpsc;

type Inbox = mpsc::UnboundedReceiver<(String, Option<Position>)>;

/// A server keeping the last `len` messages of each `chat.*` topic.
async fn server(len: usize) -> TestServer {
    start(Server::builder().history("chat.*", History::new(len, Duration::from_secs(60)))).await
}

/// A client that reconnects at once and reports (text, position) of each note.
async fn member(
    server: &TestServer,
    incidents: Option<Arc<Mutex<Vec<String>>>>,
) -> (Client, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = Client::builder()
        .reconnect(Some(
            Reconnect::default().backoff(Duration::from_millis(5), Duration::from_millis(20)),
        ))
        .on_error(move |incident, _| {
            if let (Some(seen), Incident::Unrecoverable { topic }) = (&incidents, incident) {
                seen.lock().expect("lock").push(topic.clone());
            }
        })
        .message(move |ctx, note: Note| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((note.text, ctx.metadata().position().cloned()));
            }
        });
    (server.connect(builder).await, rx)
}

fn publish(server: &TestServer, text: &str) -> usize {
    server
        .server
        .publish("chat.room", Note { text: text.into() })
        .expect("publish")
}

async fn next(inbox: &mut Inbox) -> (String, u64) {
    let (text, position) = inbox.recv().await.expect("a note");
    (text, position.map_or(0, |p| p.offset))
}

#[tokio::test]
async fn messages_carry_positions_and_subscribing_from_one_replays_the_rest() {
    bounded(async {
        let server = server(100).await;
        let (a, mut a_in) = member(&server, None).await;
        a.subscribe("chat.room").await.expect("subscribe");
        assert_eq!(a.position("chat.room").map(|p| p.offset), Some(0));
        for text in ["one", "two", "three"] {
            assert_eq!(publish(&server, text), 1);
        }
        let mut epochs = Vec::new();
        for (want, offset) in [("one", 1), ("two", 2), ("three", 3)] {
            let (text, position) = a_in.recv().await.expect("a note");
            let position = position.expect("a position");
            assert_eq!((text.as_str(), position.offset), (want, offset));
            epochs.push(position.epoch);
        }
        epochs.dedup();
        assert_eq!(epochs.len(), 1, "one epoch");
        let at = a.position("chat.room").expect("tracked");
        assert_eq!(at.offset, 3);

        // Another client that saw up to 1 gets 2 and 3 first, then what is new.
        let (b, mut b_in) = member(&server, None).await;
        let from = Position::new(at.epoch.clone(), 1);
        assert_eq!(
            b.subscribe_from("chat.room", &from)
                .await
                .expect("subscribe_from"),
            Recovery::Recovered
        );
        assert_eq!(next(&mut b_in).await, ("two".into(), 2));
        assert_eq!(next(&mut b_in).await, ("three".into(), 3));
        assert_eq!(publish(&server, "four"), 2);
        assert_eq!(next(&mut b_in).await, ("four".into(), 4));
        assert_eq!(next(&mut a_in).await, ("four".into(), 4));
        // Up to date: nothing to replay.
        let (c, mut c_in) = member(&server, None).await;
        let now = Position::new(at.epoch.clone(), 4);
        assert_eq!(
            c.subscribe_from("chat.room", &now)
                .await
                .expect("subscribe_from"),
            Recovery::Recovered
        );
        assert_eq!(publish(&server, "five"), 3);
        assert_eq!(next(&mut c_in).await, ("five".into(), 5));
        // A topic without history: no positions, nothing to recover.
        let (d, mut d_in) = member(&server, None).await;
        assert_eq!(
            d.subscribe_from("news.x", &now)
                .await
                .expect("subscribe_from"),
            Recovery::NoHistory
        );
        server
            .server
            .publish(
                "news.x",
                Note {
                    text: "plain".into(),
                },
            )
            .expect("publish");
        assert_eq!(d_in.recv().await.expect("a note"), ("plain".into(), None));
        for client in [a, b, c, d] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_trimmed_history_or_another_epoch_cannot_be_recovered() {
    bounded(async {
        let server = server(2).await;
        let (a, mut a_in) = member(&server, None).await;
        a.subscribe("chat.room").await.expect("subscribe");
        for text in ["1", "2", "3", "4", "5"] {
            publish(&server, text);
        }
        for _ in 0..5 {
            next(&mut a_in).await;
        }
        let epoch = a.position("chat.room").expect("tracked").epoch;
        // Kept: 4 and 5. From 3 is fine, from 2 is not.
        let (b, mut b_in) = member(&server, None).await;
        assert_eq!(
            b.subscribe_from("chat.room", &Position::new(epoch.clone(), 2))
                .await
                .expect("subscribe"),
            Recovery::Unrecoverable
        );
        let (c, mut c_in) = member(&server, None).await;
        assert_eq!(
            c.subscribe_from("chat.room", &Position::new("another", 4))
                .await
                .expect("subscribe"),
            Recovery::Unrecoverable
        );
        let (d, mut d_in) = member(&server, None).await;
        assert_eq!(
            d.subscribe_from("chat.room", &Position::new(epoch, 3))
                .await
                .expect("subscribe"),
            Recovery::Recovered
        );
        // Nothing was replayed to the first two; the subscription holds from now.
        publish(&server, "6");
        assert_eq!(next(&mut b_in).await, ("6".into(), 6));
        assert_eq!(next(&mut c_in).await, ("6".into(), 6));
        assert_eq!(next(&mut d_in).await, ("4".into(), 4));
        assert_eq!(next(&mut d_in).await, ("5".into(), 5));
        assert_eq!(next(&mut d_in).await, ("6".into(), 6));
        // A position with wildcards is refused by the client, and by the server.
        assert_eq!(
            b.subscribe_from("chat.*", &Position::new("e", 1))
                .await
                .expect_err("wildcards")
                .code(),
            Code::InvalidArgument
        );
        let mut raw = raw_peer(&server).await;
        let mut frame = frame_for(FrameKind::Subscribe, 9, &Note::default());
        frame.topic = "chat.*".into();
        frame.offset = 1;
        frame.epoch = "e".into();
        send_frame(&mut raw, &frame).await;
        let reply = recv_frame(&mut raw).await;
        assert_eq!((reply.kind, reply.id), (FrameKind::Error as i32, 9));
        assert_eq!(
            reply.status.map(|s| s.code),
            Some(Code::InvalidArgument as u32)
        );
        drop(raw);
        for client in [a, b, c, d] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

/// Drops `client`'s one connection from the server's side and waits until
/// the server has no connection left.
async fn drop_connection(server: &TestServer) {
    for conn in server.server.connections() {
        conn.close_with(1012, "restarting").await.expect("close");
    }
    while !server.server.connections().is_empty() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_it_missed_or_is_told_it_cannot() {
    bounded(async {
        let server = server(2).await;
        let unrecoverable = Arc::new(Mutex::new(Vec::new()));
        let (a, mut a_in) = member(&server, Some(Arc::clone(&unrecoverable))).await;
        a.subscribe("chat.room").await.expect("subscribe");
        assert_eq!(publish(&server, "1"), 1);
        assert_eq!(next(&mut a_in).await, ("1".into(), 1));

        // Away while 2 and 3 are published: they come first when it is back.
        drop_connection(&server).await;
        assert_eq!(publish(&server, "2"), 0);
        assert_eq!(publish(&server, "3"), 0);
        assert_eq!(next(&mut a_in).await, ("2".into(), 2));
        assert_eq!(next(&mut a_in).await, ("3".into(), 3));
        assert_eq!(publish(&server, "4"), 1);
        assert_eq!(next(&mut a_in).await, ("4".into(), 4));
        assert!(unrecoverable.lock().expect("lock").is_empty());

        // Away while 5, 6 and 7 are published with room for two: 5 is gone.
        drop_connection(&server).await;
        for text in ["5", "6", "7"] {
            assert_eq!(publish(&server, text), 0);
        }
        while server.server.connections().is_empty() {
            tokio::task::yield_now().await;
        }
        // Nothing replayed; it is told, and the subscription holds.
        while unrecoverable.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(*unrecoverable.lock().expect("lock"), ["chat.room"]);
        assert_eq!(a.position("chat.room").map(|p| p.offset), Some(7));
        assert_eq!(publish(&server, "8"), 1);
        assert_eq!(next(&mut a_in).await, ("8".into(), 8));
        a.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[test]
fn history_is_refused_with_a_backplane_or_a_malformed_pattern() {
    let err = Server::builder()
        .history("chat..x", History::new(10, Duration::from_secs(1)))
        .build()
        .expect_err("malformed");
    assert!(
        matches!(err, BuildError::InvalidHistory { ref pattern, .. } if pattern == "chat..x"),
        "{err}"
    );
    let err = Server::builder()
        .backplane(goomerang::pubsub::LocalOnly)
        .history("chat.*", History::new(10, Duration::from_secs(1)))
        .build()
        .expect_err("with a backplane");
    assert!(err.to_string().contains("backplane"), "{err}");
}
