//! Middleware order and short-circuit, the built-ins (timeout, logging), and panic recovery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goomerang::{Client, Code, Incident, Message, Server, Status, middleware};
use goomerang_tests::*;
use tokio::sync::mpsc;

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(log: &Log, name: &'static str) -> impl goomerang::Middleware {
    let log = Arc::clone(log);
    middleware::from_fn(move |ctx, payload, next| {
        let log = Arc::clone(&log);
        async move {
            log.lock().expect("lock").push(format!("{name} before"));
            let outcome = next.run(ctx, payload).await;
            log.lock().expect("lock").push(format!("{name} after"));
            outcome
        }
    })
}

#[tokio::test]
async fn middleware_runs_in_registration_order_around_the_handler() {
    bounded(async {
        let log: Log = Arc::default();
        let in_handler = Arc::clone(&log);
        // Registered a, handler, b: both wrap the handler, a outermost.
        let server = start(
            Server::builder()
                .middleware(recorder(&log, "a"))
                .request(move |_ctx, p: Ping| {
                    let log = Arc::clone(&in_handler);
                    async move {
                        log.lock().expect("lock").push("handler".into());
                        Ok::<_, Status>(Pong {
                            n: p.n,
                            text: p.text,
                        })
                    }
                })
                .middleware(recorder(&log, "b")),
        )
        .await;
        let client = server.client().await;
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("reply");
        assert_eq!(
            *log.lock().expect("lock"),
            ["a before", "b before", "handler", "b after", "a after"]
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn middleware_can_short_circuit_and_the_handler_never_runs() {
    bounded(async {
        let ran = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&ran);
        let server = start(
            Server::builder()
                .middleware(middleware::from_fn(|ctx, payload, next| async move {
                    if ctx.header("token") != Some("secret") {
                        return Err(Status::unauthenticated("missing token"));
                    }
                    next.run(ctx, payload).await
                }))
                .request(move |_ctx, _p: Ping| {
                    let counted = Arc::clone(&counted);
                    async move {
                        *counted.lock().expect("lock") += 1;
                        Ok::<_, Status>(Pong::default())
                    }
                }),
        )
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("rejected");
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(*ran.lock().expect("lock"), 0);
        client
            .request::<_, Pong>(Message::new(Ping::default()).header("token", "secret"))
            .await
            .expect("accepted");
        assert_eq!(*ran.lock().expect("lock"), 1);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn timeout_middleware_fails_slow_handlers_with_deadline_exceeded() {
    bounded(async {
        let server = start(
            Server::builder()
                .middleware(middleware::logging())
                .middleware(middleware::timeout(Duration::from_millis(50)))
                .request(|_ctx, w: Work| async move {
                    tokio::time::sleep(Duration::from_millis(w.ms)).await;
                    Ok::<_, Status>(Done { id: w.id })
                }),
        )
        .await;
        let client = server.client().await;
        let fast: Done = client
            .request(Work { ms: 10, id: 1 })
            .await
            .expect("fast")
            .into_inner();
        assert_eq!(fast.id, 1);
        let err = client
            .request::<_, Done>(Work { ms: 10_000, id: 2 })
            .await
            .expect_err("slow");
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(err.message().contains("50ms"), "{err}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_panicking_handler_gets_internal_and_the_connection_lives_on() {
    bounded(async {
        let (tx, mut errors) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .on_error(move |err, _| {
                    if let Incident::HandlerPanicked {
                        type_name, message, ..
                    } = err
                    {
                        let _ = tx.send((type_name.clone(), message.clone()));
                    }
                })
                .request(|_ctx, p: Ping| async move {
                    if p.n == 13 {
                        panic!("unlucky number");
                    }
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: String::new(),
                    })
                })
                .message(|_ctx, note: Note| async move {
                    if note.text == "boom" {
                        panic!("one-way boom");
                    }
                }),
        )
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping {
                n: 13,
                text: String::new(),
            })
            .await
            .expect_err("panicked");
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("unlucky number"), "{err}");
        assert_eq!(
            errors.recv().await,
            Some(("test.v1.Ping".into(), "unlucky number".into()))
        );

        client
            .send(Note {
                text: "boom".into(),
            })
            .await
            .expect("send");
        assert_eq!(
            errors.recv().await,
            Some(("test.v1.Note".into(), "one-way boom".into()))
        );
        // Same connection, still serving.
        let pong: Pong = client
            .request(Ping {
                n: 4,
                text: String::new(),
            })
            .await
            .expect("alive")
            .into_inner();
        assert_eq!(pong.n, 4);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_panicking_middleware_is_contained_too() {
    bounded(async {
        let server = start(
            Server::builder()
                .middleware(middleware::from_fn(|_ctx, _payload, _next| async move {
                    panic!("middleware bug")
                }))
                .request(|_ctx, _p: Ping| async { Ok::<_, Status>(Pong::default()) }),
        )
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("panicked");
        assert_eq!(err.code(), Code::Internal);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

/// A middleware that panics while it is called, before it returns a future.
struct PanicsWhenCalled;

impl goomerang::Middleware for PanicsWhenCalled {
    fn call(
        &self,
        ctx: goomerang::Context,
        payload: bytes::Bytes,
        next: middleware::Next,
    ) -> middleware::BoxFuture<middleware::Outcome> {
        if ctx.header("fine").is_some() {
            return next.run(ctx, payload);
        }
        panic!("middleware bug before its future")
    }
}

#[tokio::test]
async fn a_middleware_panicking_before_its_future_is_contained_too() {
    bounded(async {
        let (tx, mut errors) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .on_error(move |err, _| {
                    if let Incident::HandlerPanicked { message, .. } = err {
                        let _ = tx.send(message.clone());
                    }
                })
                .middleware(PanicsWhenCalled)
                .request(|_ctx, _p: Ping| async { Ok::<_, Status>(Pong::default()) })
                .message(|_ctx, _n: Note| async {}),
        )
        .await;
        let client = server.client().await;
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("panicked");
        assert_eq!(err.code(), Code::Internal);
        assert!(
            err.message().contains("middleware bug before its future"),
            "{err}"
        );
        assert_eq!(
            errors.recv().await.as_deref(),
            Some("middleware bug before its future")
        );
        client.send(Note::default()).await.expect("send");
        assert_eq!(
            errors.recv().await.as_deref(),
            Some("middleware bug before its future")
        );
        // The same connection still serves.
        client
            .request::<_, Pong>(Message::new(Ping::default()).header("fine", "1"))
            .await
            .expect("served");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

/// Stored by middleware as an extension; says which message it was made for
/// when its last clone is dropped.
#[derive(Clone)]
struct Stored(Arc<DropSignal>);

struct DropSignal(u64, mpsc::UnboundedSender<u64>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

#[tokio::test]
async fn every_message_gets_a_fresh_context_and_its_extensions_go_when_it_ends() {
    bounded(async {
        let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .middleware(middleware::from_fn(move |ctx, payload, next| {
                    let dropped_tx = dropped_tx.clone();
                    async move {
                        if let Some(n) = ctx.header("n").and_then(|n| n.parse().ok()) {
                            ctx.insert_extension(Stored(Arc::new(DropSignal(n, dropped_tx))));
                            ctx.set_reply_header("x-from", n.to_string());
                        }
                        next.run(ctx, payload).await
                    }
                }))
                .message(|_ctx, _n: Note| async {})
                .request(|ctx: goomerang::Context, p: Ping| async move {
                    let seen = ctx.extension::<Stored>().map(|s| s.0.0);
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: format!("{seen:?}"),
                    })
                }),
        )
        .await;
        let client = server.client().await;
        // Back to back, so that the server's reader handles them in a stream.
        for n in 1..=50u64 {
            client
                .send(Message::new(Note::default()).header("n", n.to_string()))
                .await
                .expect("send");
        }
        // Each marked message's extension is dropped once its handling ended,
        // without waiting for another message.
        let mut gone = Vec::new();
        while gone.len() < 50 {
            gone.push(dropped.recv().await.expect("signal"));
        }
        gone.sort_unstable();
        assert_eq!(gone, (1..=50).collect::<Vec<_>>());
        // And the next message sees nothing of theirs.
        let response = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("reply");
        assert_eq!(response.get_ref().text, "None", "an extension leaked");
        assert_eq!(
            response.headers().get("x-from"),
            None,
            "a reply header leaked"
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_way_handler_errors_reach_the_error_hook() {
    bounded(async {
        let (tx, mut errors) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .on_error(move |err, conn| {
                    if let Incident::Handler { status, .. } = err {
                        let _ = tx.send((status.code(), conn.is_some()));
                    }
                })
                .message(|_ctx, _n: Note| async { Err(Status::not_found("no such room")) }),
        )
        .await;
        let client = server.connect(Client::builder()).await;
        client.send(Note::default()).await.expect("send");
        assert_eq!(errors.recv().await, Some((Code::NotFound, true)));
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limit_refuses_then_closes_with_policy_violation() {
    bounded(async {
        // Practically no refill during the test: 3 messages, then refusals.
        let server = start(
            Server::builder()
                .middleware(middleware::rate_limit(0.001, 3).close_after(4))
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                }),
        )
        .await;
        let (tx, mut closes) = mpsc::unbounded_channel();
        let client = server
            .connect(
                Client::builder()
                    .reconnect(None)
                    .on_disconnect(move |_, info| {
                        let _ = tx.send((info.code, info.reason.clone()));
                    }),
            )
            .await;
        for n in 0..3 {
            client
                .request::<_, Pong>(Ping {
                    n,
                    text: String::new(),
                })
                .await
                .expect("within the burst");
        }
        for _ in 0..4 {
            let err = client
                .request::<_, Pong>(Ping::default())
                .await
                .expect_err("limited");
            assert_eq!(err.code(), Code::ResourceExhausted);
            assert!(err.message().contains("rate limit"), "{err}");
        }
        // The fifth refusal in a row closes the connection with 1008.
        let _ = client.request::<_, Pong>(Ping::default()).await;
        assert_eq!(
            closes.recv().await,
            Some((1008, "rate limit exceeded".to_owned()))
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limits_are_per_connection() {
    bounded(async {
        let server = start(
            Server::builder()
                .middleware(middleware::rate_limit(0.001, 2))
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                }),
        )
        .await;
        let (a, b) = (server.client().await, server.client().await);
        for _ in 0..2 {
            a.request::<_, Pong>(Ping::default())
                .await
                .expect("a within burst");
        }
        assert_eq!(
            a.request::<_, Pong>(Ping::default())
                .await
                .expect_err("a limited")
                .code(),
            Code::ResourceExhausted
        );
        // b has its own bucket.
        for _ in 0..2 {
            b.request::<_, Pong>(Ping::default())
                .await
                .expect("b within burst");
        }
        a.close().await.expect("close");
        b.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_rate_limits_count_separately_and_scoped_ones_apply_to_their_scope() {
    bounded(async {
        let server = start(
            Server::builder()
                .middleware(middleware::rate_limit(0.001, 5))
                .middleware_for("test.v1.Ping", middleware::rate_limit(0.001, 1))
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                })
                .request(|_ctx, w: Work| async move { Ok::<_, Status>(Done { id: w.id }) }),
        )
        .await;
        let client = server.client().await;
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("the scoped limit's one token");
        let err = client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("scoped limit reached");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("bursts of 1"), "{err}");
        // Work is outside the scope: only the global bucket (5, 2 taken) counts.
        for id in 0..3 {
            client
                .request::<_, Done>(Work { ms: 0, id })
                .await
                .expect("within the global burst");
        }
        let err = client
            .request::<_, Done>(Work::default())
            .await
            .expect_err("global limit reached");
        assert!(err.message().contains("bursts of 5"), "{err}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
