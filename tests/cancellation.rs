//! Deadlines and cancellation: many requests with their own deadlines, CANCEL reaching the peer's handler.

use std::time::Duration;

use goomerang::{Client, Code, Message, Server, Status};
use goomerang_tests::*;
use tokio::sync::mpsc;

type Events = mpsc::UnboundedSender<(u64, &'static str)>;

/// Reports "cancelled" if the handler future is dropped before it finished.
struct DropReporter {
    id: u64,
    events: Events,
    finished: bool,
}

impl Drop for DropReporter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.events.send((self.id, "cancelled"));
        }
    }
}

/// What a `Work` handler does: reports "started", sleeps `ms`, and reports
/// "cancelled" if dropped before it finished.
async fn run_work(work: Work, events: Events) -> Result<Done, Status> {
    let _ = events.send((work.id, "started"));
    let mut reporter = DropReporter {
        id: work.id,
        events,
        finished: false,
    };
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    reporter.finished = true;
    Ok(Done { id: work.id })
}

/// A server whose `Work` handler sleeps `ms`, reporting to `events` when it
/// starts and when it is cancelled. Cancellation drops the handler future (as
/// tonic does); code that must react explicitly watches `ctx.cancelled()` from
/// a subtask, which the handler here also does.
async fn work_server(events: Events) -> TestServer {
    start(Server::builder().request(move |ctx, work: Work| {
        let events = events.clone();
        async move {
            let watcher = {
                let (ctx, events, id) = (ctx.clone(), events.clone(), work.id);
                tokio::spawn(async move {
                    ctx.cancelled().await;
                    let _ = events.send((id, "ctx.cancelled"));
                })
            };
            let done = run_work(work, events).await;
            watcher.abort();
            done
        }
    }))
    .await
}

/// Waits until `id` has been both dropped and seen `ctx.cancelled()`.
async fn expect_cancelled(events: &mut mpsc::UnboundedReceiver<(u64, &'static str)>, id: u64) {
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (got, what) = events.recv().await.expect("event");
        if got == id && what != "started" {
            seen.push(what);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, ["cancelled", "ctx.cancelled"]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_each_keep_their_own_deadline() {
    bounded(async {
        let (tx, mut events) = mpsc::unbounded_channel();
        let server = work_server(tx).await;
        let client = server.client().await;
        // Ten requests multiplexed on one connection: even ids finish in 100 ms
        // with a 10 s deadline, odd ids would take 60 s with a 1 s deadline.
        let calls = (0..10u64).map(|id| {
            let client = client.clone();
            async move {
                let (ms, deadline) = if id % 2 == 0 {
                    (100, 10_000)
                } else {
                    (60_000, 1_000)
                };
                let result = client
                    .request::<_, Done>(
                        Message::new(Work { ms, id }).timeout(Duration::from_millis(deadline)),
                    )
                    .await;
                (id, result)
            }
        });
        let results = futures_util::future::join_all(calls).await;
        for (id, result) in results {
            if id % 2 == 0 {
                assert_eq!(result.expect("fast work").into_inner().id, id);
            } else {
                assert_eq!(result.expect_err("deadline").code(), Code::DeadlineExceeded);
            }
        }
        // Every slow handler observed its cancellation, and no fast one did.
        let mut cancelled = Vec::new();
        while cancelled.len() < 10 {
            let (id, what) = events.recv().await.expect("event");
            if what != "started" {
                cancelled.push(id);
            }
        }
        cancelled.sort_unstable();
        assert_eq!(cancelled, [1, 1, 3, 3, 5, 5, 7, 7, 9, 9]);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_call_cancels_the_peer_handler() {
    bounded(async {
        let (tx, mut events) = mpsc::unbounded_channel();
        let server = work_server(tx).await;
        let client = server.client().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .request::<_, Done>(Work {
                        ms: 600_000,
                        id: 42,
                    })
                    .await
            }
        });
        assert_eq!(events.recv().await, Some((42, "started")));
        call.abort();
        expect_cancelled(&mut events, 42).await;
        // The connection is healthy afterwards.
        let done: Done = client
            .request(Work { ms: 1, id: 7 })
            .await
            .expect("works")
            .into_inner();
        assert_eq!(done.id, 7);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn server_to_client_request_is_cancelled_on_the_client_too() {
    bounded(async {
        let server = start(Server::builder()).await;
        let (tx, mut events) = mpsc::unbounded_channel();
        let client = server
            .connect(Client::builder().request(move |ctx, work: Work| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send("started");
                    // A subtask holding the context sees the cancellation.
                    tokio::spawn(async move {
                        ctx.cancelled().await;
                        let _ = tx.send("cancelled");
                    });
                    std::future::pending::<()>().await;
                    Ok::<_, Status>(Done { id: work.id })
                }
            }))
            .await;
        let conn = server.server.connections().pop().expect("connection");
        let err = conn
            .request::<_, Done>(
                Message::new(Work { ms: 0, id: 1 }).timeout(Duration::from_millis(200)),
            )
            .await
            .expect_err("times out");
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(events.recv().await, Some("started"));
        assert_eq!(events.recv().await, Some("cancelled"));
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pending_requests_fail_when_the_connection_ends() {
    bounded(async {
        let (tx, mut events) = mpsc::unbounded_channel();
        let server = work_server(tx).await;
        let client = server.client().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Done>(Work { ms: 600_000, id: 1 }).await }
        });
        assert_eq!(events.recv().await, Some((1, "started")));
        // The server goes away mid-request: the caller gets UNAVAILABLE, not a hang.
        let conn = server.server.connections().pop().expect("connection");
        conn.close().await;
        let err = call.await.expect("join").expect_err("connection closed");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("before the reply"), "{err}");
        server.stop().await;
    })
    .await;
}

/// `ctx.is_cancelled()` read without ever awaiting `ctx.cancelled()`: false
/// while the request runs, true once CANCEL came, and false for a request
/// that finished and was answered.
#[tokio::test]
async fn is_cancelled_follows_cancel_and_completion_without_a_watcher() {
    use std::sync::{Arc, Mutex};
    bounded(async {
        // The test asks a running handler's context through this: each Ping
        // is answered with the latest Work context's is_cancelled().
        let latest: Arc<Mutex<Option<goomerang::Context>>> = Arc::default();
        let (tx, mut events) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .request({
                    let (latest, events) = (latest.clone(), tx.clone());
                    move |ctx, work: Work| {
                        let (latest, events) = (latest.clone(), events.clone());
                        async move {
                            *latest.lock().expect("lock") = Some(ctx.clone());
                            run_work(work, events).await
                        }
                    }
                })
                .request({
                    let latest = latest.clone();
                    // A Ping asks; the Pong's n is 1 for cancelled, 0 for not.
                    move |_ctx, _ping: Ping| {
                        let latest = latest.clone();
                        async move {
                            let ctx = latest.lock().expect("lock").clone().expect("a context");
                            Ok::<_, Status>(Pong {
                                n: u64::from(ctx.is_cancelled()),
                                text: String::new(),
                            })
                        }
                    }
                }),
        )
        .await;
        let client = server.client().await;
        let ask = async |n| -> bool {
            let pong: Pong = client
                .request(Ping {
                    n,
                    text: String::new(),
                })
                .await
                .expect("check")
                .into_inner();
            pong.n == 1
        };
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Done>(Work { ms: 600_000, id: 1 }).await }
        });
        assert_eq!(events.recv().await, Some((1, "started")));
        assert!(!ask(1).await, "running");
        call.abort();
        assert_eq!(events.recv().await, Some((1, "cancelled")));
        assert!(ask(2).await, "after CANCEL");

        // A request that finished and was answered is not cancelled.
        let done: Done = client
            .request(Work { ms: 0, id: 2 })
            .await
            .expect("works")
            .into_inner();
        assert_eq!(done.id, 2);
        assert_eq!(events.recv().await, Some((2, "started")));
        assert!(!ask(3).await, "finished");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn each_deadline_ends_its_request_on_time_whatever_the_order_they_start_in() {
    bounded(async {
        let (tx, _events) = mpsc::unbounded_channel();
        let server = work_server(tx).await;
        let client = server.client().await;
        let started = tokio::time::Instant::now();
        // Answered in time, so the earliest deadline the connection knew of
        // goes with it; the others' handlers would take a minute.
        let quick = client.request::<_, Done>(
            Message::new(Work { ms: 10, id: 100 }).timeout(Duration::from_millis(50)),
        );
        let slow = [500u64, 100, 300, 200, 400].map(|ms| {
            let client = client.clone();
            async move {
                let err = client
                    .request::<_, Done>(
                        Message::new(Work { ms: 60_000, id: ms })
                            .timeout(Duration::from_millis(ms)),
                    )
                    .await
                    .expect_err("times out");
                (ms, started.elapsed(), err)
            }
        });
        let (quick, slow) = tokio::join!(quick, futures_util::future::join_all(slow));
        assert_eq!(quick.expect("answered in time").into_inner().id, 100);
        for (ms, waited, err) in slow {
            assert_eq!(err.code(), Code::DeadlineExceeded, "{ms}");
            let deadline = Duration::from_millis(ms);
            assert!(
                waited >= deadline && waited < deadline + Duration::from_millis(50),
                "{ms} ms deadline ended after {waited:?}"
            );
        }
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_shorter_deadline_started_later_still_ends_first() {
    bounded(async {
        let (tx, mut events) = mpsc::unbounded_channel();
        let server = work_server(tx).await;
        let client = server.client().await;
        let started = tokio::time::Instant::now();
        // The first request's deadline is a minute away; the second's, started
        // once the first is under way, is 100 ms: the connection's one timer
        // for its deadlines must wake for it, not sleep on to the minute.
        let long = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .request::<_, Done>(
                        Message::new(Work { ms: 1_000, id: 1 }).timeout(Duration::from_secs(60)),
                    )
                    .await
            }
        });
        assert_eq!(events.recv().await, Some((1, "started")));
        let err = client
            .request::<_, Done>(
                Message::new(Work { ms: 60_000, id: 2 }).timeout(Duration::from_millis(100)),
            )
            .await
            .expect_err("times out");
        let waited = started.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(
            err.message(),
            "no reply to request 2 (test.v1.Work) within 100ms"
        );
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(200),
            "{waited:?}"
        );
        expect_cancelled(&mut events, 2).await;
        // The first still gets its answer, at its own pace.
        assert_eq!(long.await.expect("task").expect("done").into_inner().id, 1);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
