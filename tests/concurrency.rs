//! Concurrency caps, ordered mode, and backpressure that stays on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use goomerang::{Client, Config, Server, Status};
use goomerang_tests::*;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
struct Gauge {
    active: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn exit(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn gauged_work(gauge: &Arc<Gauge>, config: Config) -> goomerang::ServerBuilder {
    let gauge = Arc::clone(gauge);
    Server::builder()
        .config(config)
        .request(move |_ctx, w: Work| {
            let gauge = Arc::clone(&gauge);
            async move {
                gauge.enter();
                tokio::time::sleep(Duration::from_millis(w.ms)).await;
                gauge.exit();
                Ok::<_, Status>(Done { id: w.id })
            }
        })
}

async fn fire(client: &Client, count: u64) {
    let calls = (0..count).map(|id| {
        let client = client.clone();
        async move {
            client
                .request::<_, Done>(Work { ms: 20, id })
                .await
                .expect("done")
        }
    });
    futures_util::future::join_all(calls).await;
}

#[tokio::test(start_paused = true)]
async fn per_connection_cap_bounds_concurrent_handlers() {
    bounded(async {
        let gauge = Arc::new(Gauge::default());
        let server = start(gauged_work(
            &gauge,
            Config::default().max_concurrent_per_connection(4),
        ))
        .await;
        let client = server.client().await;
        fire(&client, 24).await;
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 4);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn global_cap_bounds_handlers_across_connections() {
    bounded(async {
        let gauge = Arc::new(Gauge::default());
        let server = start(gauged_work(
            &gauge,
            Config::default().max_concurrent_handlers(3),
        ))
        .await;
        let (a, b) = (server.client().await, server.client().await);
        tokio::join!(fire(&a, 12), fire(&b, 12));
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 3);
        a.close().await.expect("close");
        b.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_cap_of_one_is_shared_by_connections_streaming_quick_handlers() {
    bounded(async {
        // Handlers that end without waiting run on each connection's reader,
        // which keeps its slot of the server's cap while frames stream in:
        // with one slot for the server, the two readers must still take
        // turns, never both run one at once, and each must get through.
        const EACH: u64 = 5_000;
        let gauge = Arc::new(Gauge::default());
        let handled = Arc::new(AtomicUsize::new(0));
        let all_in = Arc::new(Notify::new());
        let server = start({
            let (gauge, handled, all_in) = (gauge.clone(), handled.clone(), all_in.clone());
            Server::builder()
                .config(Config::default().max_concurrent_handlers(1))
                .message(move |_ctx, _seq: Seq| {
                    gauge.enter();
                    // Long enough that the other reader overlaps it, if it may.
                    std::thread::yield_now();
                    gauge.exit();
                    if handled.fetch_add(1, Ordering::SeqCst) + 1 == 2 * EACH as usize {
                        all_in.notify_one();
                    }
                    std::future::ready(())
                })
        })
        .await;
        let done = all_in.notified();
        let (a, b) = (server.client().await, server.client().await);
        let stream = |client: Client| async move {
            for n in 0..EACH {
                client.send(Seq { n }).await.expect("send");
            }
        };
        tokio::join!(stream(a.clone()), stream(b.clone()), done);
        assert_eq!(handled.load(Ordering::SeqCst), 2 * EACH as usize);
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 1);
        a.close().await.expect("close");
        b.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_preserves_arrival_order_under_load() {
    bounded(async {
        const COUNT: u64 = 20_000;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .config(Config::default().ordered(true))
                .message(move |_ctx, seq: Seq| {
                    let tx = tx.clone();
                    async move {
                        // Uneven work per message: would reorder a concurrent dispatcher.
                        for _ in 0..(seq.n % 7) {
                            tokio::task::yield_now().await;
                        }
                        tx.send(seq.n).expect("test alive");
                    }
                }),
        )
        .await;
        let client = server.client().await;
        for n in 0..COUNT {
            client.send(Seq { n }).await.expect("send");
        }
        let mut inversions = 0;
        let mut last = None;
        for _ in 0..COUNT {
            let n = rx.recv().await.expect("handled");
            if last.is_some_and(|last| n < last) {
                inversions += 1;
            }
            last = Some(n);
        }
        assert_eq!(inversions, 0);
        assert_eq!(last, Some(COUNT - 1));
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ordered_handlers_can_call_back_into_the_peer() {
    bounded(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .config(Config::default().ordered(true))
                .message(move |ctx, note: Note| {
                    let tx = tx.clone();
                    async move {
                        let pong: Pong = ctx
                            .connection()
                            .request(Ping {
                                n: 1,
                                text: note.text,
                            })
                            .await?
                            .into_inner();
                        tx.send(pong.text).expect("test alive");
                        Ok::<_, Status>(())
                    }
                }),
        )
        .await;
        let client = server
            .connect(Client::builder().request(|_ctx, p: Ping| async move {
                Ok::<_, Status>(Pong {
                    n: p.n,
                    text: format!("{}!", p.text),
                })
            }))
            .await;
        client.send(Note { text: "a".into() }).await.expect("send");
        client.send(Note { text: "b".into() }).await.expect("send");
        assert_eq!(rx.recv().await.as_deref(), Some("a!"));
        assert_eq!(rx.recv().await.as_deref(), Some("b!"));
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_saturated_connection_does_not_block_others() {
    bounded(async {
        let release = Arc::new(Notify::new());
        let gauge = Arc::new(Gauge::default());
        let (blocked, released) = (Arc::clone(&gauge), Arc::clone(&release));
        let server = start(
            Server::builder()
                .config(Config::default().max_concurrent_per_connection(2))
                .request(move |_ctx, w: Work| {
                    let (gauge, release) = (Arc::clone(&blocked), Arc::clone(&released));
                    async move {
                        // Only the greedy connection's (blocking) work is gauged.
                        if w.ms > 0 {
                            gauge.enter();
                            release.notified().await;
                            gauge.exit();
                        }
                        Ok::<_, Status>(Done { id: w.id })
                    }
                }),
        )
        .await;
        let greedy = server.client().await;
        // Four blocking requests on a connection capped at two: two run, the
        // reader of that connection pauses with the rest unread.
        let stuck: Vec<_> = (0..4)
            .map(|id| {
                let greedy = greedy.clone();
                tokio::spawn(async move { greedy.request::<_, Done>(Work { ms: 1, id }).await })
            })
            .collect();
        while gauge.active.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // Another connection is served at once.
        let other = server.client().await;
        for id in 0..20 {
            let done: Done = other
                .request(Work { ms: 0, id })
                .await
                .expect("served")
                .into_inner();
            assert_eq!(done.id, id);
        }
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 2);
        // Release the greedy handlers one at a time until all four finished.
        let mut results = Vec::new();
        for call in stuck {
            while !call.is_finished() {
                release.notify_one();
                tokio::task::yield_now().await;
            }
            results.push(call.await.expect("join").expect("done").into_inner().id);
        }
        results.sort_unstable();
        assert_eq!(results, [0, 1, 2, 3]);
        assert!(gauge.peak.load(Ordering::SeqCst) <= 2);
        greedy.close().await.expect("close");
        other.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_for_room_in_a_tiny_outbound_queue() {
    bounded(async {
        // A 64-byte budget holds about one reply: most replies made on the
        // reader's poll find the queue full and wait for room in a task that
        // keeps the handler's slot, under a cap of 4.
        let server = start(
            Server::builder()
                .config(
                    Config::default()
                        .outbound_queue_bytes(64)
                        .max_concurrent_per_connection(4),
                )
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: "x".repeat(40),
                    })
                }),
        )
        .await;
        let client = server.client().await;
        let calls = (0..500).map(|n| {
            let client = client.clone();
            async move {
                let pong: Pong = client
                    .request(Ping {
                        n,
                        text: String::new(),
                    })
                    .await
                    .expect("every request gets its reply")
                    .into_inner();
                assert_eq!(pong.n, n);
            }
        });
        // Meanwhile, the server's queued bytes never exceed the budget.
        let done = std::sync::atomic::AtomicBool::new(false);
        let watch = async {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(queued_bytes(&server.server));
                tokio::task::yield_now().await;
            }
            peak
        };
        let run = async {
            futures_util::future::join_all(calls).await;
            done.store(true, Ordering::SeqCst);
        };
        let (peak, ()) = tokio::join!(watch, run);
        assert!(peak <= 64, "{peak} bytes queued under a 64-byte budget");
        // Every reply was flushed: the budget comes back whole (its last bytes just
        // after the last flush, which the client may have seen first).
        while queued_bytes(&server.server) != 0 {
            tokio::task::yield_now().await;
        }
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_many_tasks_each_get_every_answer() {
    bounded(async {
        // Eight tasks each start 64 requests at once on one connection (the
        // burst path: all but each task's first only queue), some of them
        // through a client queue small enough to fill (the wait for room).
        let server = start(echo(Server::builder())).await;
        for budget in [4 << 20, 256] {
            let client = server
                .connect(Client::builder().config(Config::default().outbound_queue_bytes(budget)))
                .await;
            let tasks: Vec<_> = (0..8u64)
                .map(|task| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let burst = (0..64u64).map(|i| {
                            client.request::<_, Pong>(Ping {
                                n: task * 1_000 + i,
                                text: "burst".into(),
                            })
                        });
                        futures_util::future::join_all(burst)
                            .await
                            .into_iter()
                            .map(|reply| {
                                reply.expect("every request gets its reply").into_inner().n
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for (task, handle) in (0..8u64).zip(tasks) {
                let ns = handle.await.expect("task");
                assert_eq!(ns, (0..64).map(|i| task * 1_000 + i).collect::<Vec<_>>());
            }
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}
