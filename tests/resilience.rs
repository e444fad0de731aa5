//! Slow consumers, keepalive, reconnect with resubscription, and restart close codes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goomerang::{
    Client, Code, Config, Error, Incident, Initiator, Keepalive, Reconnect, Server, SlowConsumer,
    State, Status, WhileDisconnected,
};
use goomerang_tests::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A client counting the Notes it receives.
async fn counter(server: &TestServer) -> (Client, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = server
        .connect(Client::builder().message(move |_ctx, _note: Note| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
            }
        }))
        .await;
    (client, rx)
}

/// Each connection's outbound budget in the slow-consumer runs.
const BUDGET: u64 = 64 << 10;

/// Broadcasts per wave: a wave's frames (about 1,030 bytes each) take less
/// than half of [`BUDGET`]. A connection gives a flush's budget bytes back
/// just after the flush, so when a healthy client has read a whole wave, up
/// to that wave may still be counted against it: the next wave must fit
/// beside it.
const WAVE: usize = 25;

/// What a slow-consumer run saw: messages per healthy client, slow-consumer
/// reports, the silent peer's close, and the most bytes the server held queued
/// at the end of a wave (once the healthy clients had read everything).
struct SlowRun {
    /// The server's id of the silent peer's connection.
    silent: u64,
    received: Vec<u64>,
    reports: Vec<(u64, bool)>,
    close: Option<(u16, Initiator)>,
    peak_queued_after_wave: u64,
}

async fn slow_consumer_run(policy: SlowConsumer) -> SlowRun {
    // Server-side ids, as each connection's on_connect reports it.
    let opened = Arc::new(Mutex::new(Vec::new()));
    let (err_tx, mut errors) = mpsc::unbounded_channel();
    let (close_tx, mut closes) = mpsc::unbounded_channel();
    let server = start(
        Server::builder()
            .config(
                Config::default()
                    .outbound_queue_bytes(BUDGET as usize)
                    .slow_consumer(policy)
                    .keepalive(None),
            )
            .on_error(move |err, _| {
                if let Incident::SlowConsumer { conn, disconnected } = err {
                    let _ = err_tx.send((*conn, *disconnected));
                }
            })
            .on_disconnect(move |conn, info| {
                let _ = close_tx.send((conn.id(), info.code, info.initiator));
            })
            .on_connect({
                let opened = Arc::clone(&opened);
                move |conn| opened.lock().expect("lock").push(conn.id())
            }),
    )
    .await;
    let mut healthy = Vec::new();
    for _ in 0..4 {
        healthy.push(counter(&server).await);
    }
    // Connection 5: a raw peer that never reads anything.
    let silent = raw_peer(&server).await;
    // Every connection's on_connect has run (they run on the connections'
    // own tasks, in no set order); ids follow connection order, so the
    // silent peer, connected last, has the highest.
    while opened.lock().expect("lock").len() != 5 {
        tokio::task::yield_now().await;
    }
    let silent_id = *opened
        .lock()
        .expect("lock")
        .iter()
        .max()
        .expect("five connections");
    let payload = "x".repeat(1000);
    let mut received = vec![0u64; healthy.len()];
    let mut reports = Vec::new();
    let mut peak_queued_after_wave = 0;
    // Waves of one-KiB broadcasts; each wave the healthy clients read in
    // full before the next. Every broadcast call returns without waiting.
    // The silent peer's socket buffers fill first (a few MiB on loopback),
    // then its budget: 4,000 waves are about 100 MiB, far beyond both.
    for _wave in 0..4000 {
        for _ in 0..WAVE {
            server
                .server
                .broadcast(Note {
                    text: payload.clone(),
                })
                .expect("broadcast");
        }
        for (i, (_, inbox)) in healthy.iter_mut().enumerate() {
            for _ in 0..WAVE {
                inbox.recv().await.expect("healthy client receives");
                received[i] += 1;
            }
        }
        // The healthy clients read the whole wave: what is still queued is the
        // silent peer's (bounded by its budget), never theirs held back.
        peak_queued_after_wave = peak_queued_after_wave.max(queued_bytes(&server.server));
        while let Ok(report) = errors.try_recv() {
            reports.push(report);
        }
        if !reports.is_empty() {
            break;
        }
    }
    assert!(
        !reports.is_empty(),
        "the silent peer's queue never overflowed"
    );
    let close = if policy == SlowConsumer::Disconnect {
        let (id, code, initiator) = closes.recv().await.expect("slow consumer disconnected");
        assert_eq!(id, silent_id);
        Some((code, initiator))
    } else {
        None
    };
    drop(silent);
    for (client, _) in healthy {
        client.close().await.expect("close");
    }
    server.stop().await;
    SlowRun {
        silent: silent_id,
        received,
        reports,
        close,
        peak_queued_after_wave,
    }
}

/// The silent peer held nobody back: every healthy client got every broadcast,
/// and after each wave nothing was left queued beyond the silent peer's own
/// budget, plus at most the last wave for each healthy client (its budget
/// bytes are given back just after the flush that sent it).
fn assert_never_slowed(run: &SlowRun) {
    let received = &run.received;
    assert!(
        received
            .iter()
            .all(|&n| n == received[0] && n >= WAVE as u64),
        "{received:?}"
    );
    let bound = BUDGET + 4 * (WAVE as u64) * 1100;
    assert!(
        run.peak_queued_after_wave <= bound,
        "{} bytes queued after a wave (bound {bound})",
        run.peak_queued_after_wave
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_reading_client_is_disconnected_and_never_slows_the_others() {
    bounded(async {
        let run = slow_consumer_run(SlowConsumer::Disconnect).await;
        assert_eq!(
            run.reports[0],
            (run.silent, true),
            "the silent peer, disconnected"
        );
        assert_eq!(
            run.close,
            Some((goomerang::pubsub::CLOSE_SLOW_CONSUMER, Initiator::Local))
        );
        assert_never_slowed(&run);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_policy_skips_messages_for_a_full_queue_and_keeps_the_connection() {
    bounded(async {
        let run = slow_consumer_run(SlowConsumer::Drop).await;
        assert_eq!(
            run.reports[0],
            (run.silent, false),
            "the silent peer, message dropped"
        );
        assert_never_slowed(&run);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_drops_a_peer_that_stopped_answering_and_keeps_live_ones() {
    bounded(async {
        let (err_tx, mut errors) = mpsc::unbounded_channel();
        let (close_tx, mut closes) = mpsc::unbounded_channel();
        let keepalive = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1));
        let server = start(
            Server::builder()
                .config(Config::default().keepalive(Some(keepalive)))
                .on_error(move |err, _| {
                    if matches!(err, Incident::KeepaliveTimeout { .. }) {
                        let _ = err_tx.send(err.to_string());
                    }
                })
                .on_disconnect(move |conn, info| {
                    let _ = close_tx.send((conn.id(), info.clone()));
                })
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                }),
        )
        .await;
        let live = server.client().await;
        // A peer that never reads, so never answers pings (as a half-open TCP peer would not).
        let dead = raw_peer(&server).await;
        let (id, info) = closes.recv().await.expect("the dead peer is dropped");
        assert_eq!(id, 2);
        assert_eq!((info.code, info.initiator), (1006, Initiator::Local));
        assert!(info.reason.contains("keepalive"), "{}", info.reason);
        assert!(
            errors
                .recv()
                .await
                .expect("reported")
                .contains("keepalive timeout")
        );
        // Much later, the live client is still connected and served.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let pong: Pong = live
            .request(Ping {
                n: 3,
                text: String::new(),
            })
            .await
            .expect("alive")
            .into_inner();
        assert_eq!(pong.n, 3);
        assert_eq!(live.state(), State::Running);
        drop(dead);
        live.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_close_the_peer_never_answers_ends_the_connection_after_the_close_timeout() {
    bounded(async {
        // No keepalive: nothing but the close itself wakes the server's reader.
        let close_timeout = Duration::from_secs(5);
        let (conn_tx, mut conns) = mpsc::unbounded_channel();
        let (close_tx, mut closes) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .config(
                    Config::default()
                        .keepalive(None)
                        .close_timeout(close_timeout),
                )
                .on_connect(move |conn| {
                    let _ = conn_tx.send(conn.clone());
                })
                .on_disconnect(move |_conn, info| {
                    let _ = close_tx.send(info.clone());
                }),
        )
        .await;
        // A peer that never reads, so never answers the close frame.
        let silent = raw_peer(&server).await;
        let conn = conns.recv().await.expect("connected");
        let started = tokio::time::Instant::now();
        conn.close_with(4000, "bye")
            .await
            .expect("a valid close code");
        let info = closes.recv().await.expect("closed");
        assert_eq!(
            (info.code, info.reason.as_str(), info.initiator),
            (4000, "bye", Initiator::Local)
        );
        assert_eq!(started.elapsed(), close_timeout);
        drop(silent);
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_detects_a_server_that_stopped_answering() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A hand-written server that accepts and then never reads.
        let silent = tokio::spawn(async move { accept_raw(&listener).await });
        let (tx, mut errors) = mpsc::unbounded_channel();
        let keepalive = Keepalive::new(Duration::from_secs(2), Duration::from_secs(3));
        let client = Client::builder()
            .config(Config::default().keepalive(Some(keepalive)))
            .reconnect(None)
            .on_error(move |err, _| {
                let _ = tx.send(err.to_string());
            })
            .connect(&format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        let conn = client.connection().expect("connected");
        conn.closed().await;
        assert!(
            errors
                .recv()
                .await
                .expect("reported")
                .contains("keepalive timeout")
        );
        assert_eq!(client.state(), State::Closed);
        drop(silent.await.expect("fake server"));
    })
    .await;
}

#[tokio::test]
async fn clients_reconnect_after_a_restart_on_the_same_port_and_resubscribe() {
    bounded(async {
        let (sub_tx, mut subscribed) = mpsc::unbounded_channel();
        let builder = |sub_tx: mpsc::UnboundedSender<String>| {
            Server::builder()
                .on_subscribe(move |_, sub| {
                    let _ = sub_tx.send(sub.pattern.clone());
                })
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n + 100,
                        text: p.text,
                    })
                })
        };
        let first = start(builder(sub_tx.clone())).await;
        let addr = first.addr;

        let states = Arc::new(Mutex::new(Vec::new()));
        let (closes_tx, mut closes) = mpsc::unbounded_channel();
        let (note_tx, mut notes) = mpsc::unbounded_channel();
        let seen = Arc::clone(&states);
        let client = first
            .connect(
                Client::builder()
                    .reconnect(Some(
                        Reconnect::default()
                            .backoff(Duration::from_millis(5), Duration::from_millis(50)),
                    ))
                    .on_state_change(move |s| seen.lock().expect("lock").push(s))
                    .on_disconnect(move |_, info| {
                        let _ = closes_tx.send(info.code);
                    })
                    .message(move |_ctx, note: Note| {
                        let tx = note_tx.clone();
                        async move {
                            let _ = tx.send(note.text);
                        }
                    }),
            )
            .await;
        client.subscribe("news.>").await.expect("subscribe");
        assert_eq!(subscribed.recv().await.as_deref(), Some("news.>"));

        // Restart: the server says 1012 (service restart) and goes away.
        first
            .server
            .shutdown_with(Duration::from_secs(5), 1012, "restarting")
            .await
            .expect("shutdown");
        assert_eq!(closes.recv().await, Some(1012));
        // A request made while disconnected waits for the reconnection (default policy).
        let waiting = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .request::<_, Pong>(Ping {
                        n: 1,
                        text: String::new(),
                    })
                    .await
            }
        });
        let listener = TcpListener::bind(addr).await.expect("rebind the same port");
        let second_server = builder(sub_tx).build().expect("valid routes");
        let serving = tokio::spawn({
            let server = second_server.clone();
            async move { server.serve(listener).await }
        });
        // The subscription is renewed on the new server without the app doing anything.
        assert_eq!(subscribed.recv().await.as_deref(), Some("news.>"));
        assert_eq!(
            second_server
                .publish(
                    "news.today",
                    Note {
                        text: "back".into()
                    }
                )
                .expect("publish"),
            1
        );
        assert_eq!(notes.recv().await.as_deref(), Some("back"));
        assert_eq!(
            waiting
                .await
                .expect("join")
                .expect("answered after reconnecting")
                .into_inner()
                .n,
            101
        );
        assert_eq!(
            *states.lock().expect("lock"),
            [State::Running, State::Closed, State::Running]
        );
        client.close().await.expect("close");
        second_server
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        serving.await.expect("join").expect("serve");
    })
    .await;
}

#[tokio::test]
async fn fail_fast_and_no_reconnect_policies() {
    bounded(async {
        let server = start(Server::builder()).await;
        let fail_fast = server
            .connect(
                Client::builder().reconnect(Some(
                    Reconnect::default()
                        .backoff(Duration::from_millis(5), Duration::from_millis(20))
                        .while_disconnected(WhileDisconnected::FailFast),
                )),
            )
            .await;
        let (never_state_tx, mut never_states) = mpsc::unbounded_channel();
        let never = server
            .connect(
                Client::builder()
                    .reconnect(None)
                    .on_state_change(move |state| {
                        let _ = never_state_tx.send(state);
                    }),
            )
            .await;
        let (a, b) = (
            fail_fast.connection().expect("a"),
            never.connection().expect("b"),
        );
        server.stop().await;
        a.closed().await;
        b.closed().await;
        let started = std::time::Instant::now();
        let err = fail_fast
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("fails fast");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Without reconnection the client ends when its connection does; its supervisor says so.
        while never_states
            .recv()
            .await
            .expect("the client reports its state")
            != State::Closed
        {}
        assert!(matches!(
            never.send(Note::default()).await,
            Err(Error::NotRunning)
        ));
        assert_eq!(never.state(), State::Closed);
        // Closing a client that is retrying stops it; closing one that is not fails typed.
        fail_fast.close().await.expect("stops retrying");
        assert!(matches!(never.close().await, Err(Error::NotRunning)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_written_into_a_full_socket_all_arrive() {
    bounded(async {
        use futures_util::StreamExt as _;
        use prost::Message as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, accept) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = accepted.send(accept_raw(&listener).await);
        });
        let client = Client::builder()
            .reconnect(None)
            .connect(&format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        let mut peer = accept.await.expect("accepted");
        // 200 requests of 64 KiB while the peer reads nothing: far more than
        // the socket buffers hold, so requests written by their callers meet
        // a full socket and the writer task must finish them.
        const COUNT: u64 = 200;
        let calls: Vec<_> = (0..COUNT)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = client
                        .request::<_, Pong>(Ping {
                            n,
                            text: "x".repeat(64 << 10),
                        })
                        .await;
                })
            })
            .collect();
        // Now read: every request arrives whole, each id once.
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < COUNT as usize {
            let message = peer.next().await.expect("open").expect("frame");
            let frame = goomerang_tests::wire::Frame::decode(message.into_data()).expect("a frame");
            let ping = Ping::decode(frame.payload).expect("a Ping");
            assert_eq!(ping.text.len(), 64 << 10);
            assert!(seen.insert(frame.id), "id {} twice", frame.id);
        }
        for call in calls {
            call.abort();
        }
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn connect_falls_back_to_the_next_url_when_the_first_is_unreachable() {
    bounded(async {
        let server = start(echo(Server::builder())).await;
        // A port nobody listens on: bound, then released.
        let dead = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let client = Client::builder()
            .fallback_urls([server.url()])
            .connect(&format!("ws://{dead}/ws"))
            .await
            .expect("the fallback is reached");
        let pong: Pong = client
            .request(Ping {
                n: 3,
                text: String::new(),
            })
            .await
            .expect("served")
            .into_inner();
        assert_eq!(pong.n, 3);
        // With no fallback, the unreachable URL is the error.
        let err = Client::builder()
            .connect(&format!("ws://{dead}/ws"))
            .await
            .expect_err("unreachable");
        assert!(matches!(err, goomerang::Error::Connect { .. }), "{err:?}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
