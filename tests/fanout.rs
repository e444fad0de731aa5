//! Broadcast and topic pub/sub over real connections: wildcards, queue groups, cleanup, limits, hooks, backplane.

use std::sync::{Arc, Mutex};

use goomerang::pubsub::{Backplane, Event, Inbound};
use goomerang::{Client, Code, Config, Server, Status};
use goomerang_tests::*;
use tokio::sync::mpsc;

type Inbox = mpsc::UnboundedReceiver<(String, Option<String>)>;

/// A client whose Note handler reports (text, topic).
async fn listener(server: &TestServer) -> (Client, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = server
        .connect(Client::builder().message(move |ctx, note: Note| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((note.text, ctx.metadata().topic().map(str::to_owned)));
            }
        }))
        .await;
    (client, rx)
}

/// Waits until the server sees `n` connections (the upgrade task registers them).
async fn connections(server: &TestServer, n: usize) {
    while server.server.connections().len() != n {
        tokio::task::yield_now().await;
    }
}

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

#[tokio::test]
async fn server_broadcast_reaches_every_client_once() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&seen);
        let server = start(Server::builder().on_broadcast(move |type_name, n| {
            hook.lock().expect("lock").push((type_name.to_owned(), n));
        }))
        .await;
        let (a, mut a_in) = listener(&server).await;
        let (b, mut b_in) = listener(&server).await;
        let (c, mut c_in) = listener(&server).await;
        connections(&server, 3).await;
        assert_eq!(server.server.broadcast(note("all")).expect("broadcast"), 3);
        for inbox in [&mut a_in, &mut b_in, &mut c_in] {
            assert_eq!(inbox.recv().await, Some(("all".into(), None)));
        }
        // Clients connected one after another; the server numbered them 1, 2, 3.
        let except = 2;
        let b_on_server = server.server.connection(except).expect("b on server");
        assert_eq!(
            server
                .server
                .broadcast_except(&b_on_server, note("not b"))
                .expect("broadcast"),
            2
        );
        assert_eq!(a_in.recv().await.map(|m| m.0).as_deref(), Some("not b"));
        assert_eq!(c_in.recv().await.map(|m| m.0).as_deref(), Some("not b"));
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                ("test.v1.Note".to_owned(), 3),
                ("test.v1.Note".to_owned(), 2)
            ]
        );
        // b got nothing more: a ping through it arrives before any stray broadcast would.
        server
            .server
            .connection(except)
            .expect("b")
            .send(note("direct"))
            .await
            .expect("send");
        assert_eq!(b_in.recv().await.map(|m| m.0).as_deref(), Some("direct"));
        for client in [a, b, c] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn client_initiated_broadcast_is_relayed_to_all() {
    bounded(async {
        let server = start(Server::builder().allow_client_broadcast(|_conn| true)).await;
        let (a, mut a_in) = listener(&server).await;
        let (b, mut b_in) = listener(&server).await;
        connections(&server, 2).await;
        a.broadcast(goomerang::Message::new(note("from a")).header("k", "v"))
            .await
            .expect("broadcast");
        assert_eq!(a_in.recv().await.map(|m| m.0).as_deref(), Some("from a"));
        assert_eq!(b_in.recv().await.map(|m| m.0).as_deref(), Some("from a"));
        a.close().await.expect("close");
        b.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publish_routes_through_wildcards_from_client_and_server() {
    bounded(async {
        let published = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&published);
        let server = start(Server::builder().on_publish(move |topic, _type, n| {
            hook.lock().expect("lock").push((topic.to_owned(), n));
        }))
        .await;
        let (exact, mut exact_in) = listener(&server).await;
        let (star, mut star_in) = listener(&server).await;
        let (rest, mut rest_in) = listener(&server).await;
        exact.subscribe("chat.room1").await.expect("subscribe");
        star.subscribe("chat.*").await.expect("subscribe");
        rest.subscribe("chat.>").await.expect("subscribe");

        // From the server.
        assert_eq!(
            server
                .server
                .publish("chat.room1", note("r1"))
                .expect("publish"),
            3
        );
        for inbox in [&mut exact_in, &mut star_in, &mut rest_in] {
            assert_eq!(
                inbox.recv().await,
                Some(("r1".into(), Some("chat.room1".into())))
            );
        }
        // From a client: only `chat.>` matches two tokens below chat.
        exact
            .publish("chat.room1.typing", note("typing"))
            .await
            .expect("publish");
        assert_eq!(
            rest_in.recv().await,
            Some(("typing".into(), Some("chat.room1.typing".into())))
        );
        // After unsubscribing, `chat.*` no longer receives; a later message proves order.
        star.unsubscribe("chat.*").await.expect("unsubscribe");
        assert_eq!(
            server
                .server
                .publish("chat.room2", note("r2"))
                .expect("publish"),
            1
        );
        star.subscribe("chat.room2").await.expect("subscribe");
        assert_eq!(
            server
                .server
                .publish("chat.room2", note("r2 again"))
                .expect("publish"),
            2
        );
        assert_eq!(
            star_in.recv().await.map(|m| m.0).as_deref(),
            Some("r2 again")
        );
        assert_eq!(rest_in.recv().await.map(|m| m.0).as_deref(), Some("r2"));
        assert_eq!(
            rest_in.recv().await.map(|m| m.0).as_deref(),
            Some("r2 again")
        );
        let log = published.lock().expect("lock").clone();
        assert_eq!(log[0], ("chat.room1".into(), 3));
        assert_eq!(log[1], ("chat.room1.typing".into(), 1));
        for client in [exact, star, rest] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn queue_groups_deliver_each_message_to_one_member() {
    bounded(async {
        let server = start(Server::builder()).await;
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (client, inbox) = listener(&server).await;
            client
                .subscribe_group("jobs.>", "workers")
                .await
                .expect("subscribe");
            // Everyone's, outside the group: the end-of-jobs sentinel.
            client.subscribe("jobs-done").await.expect("subscribe");
            workers.push((client, inbox));
        }
        for i in 0..30 {
            assert_eq!(
                server
                    .server
                    .publish("jobs.new", note(&format!("job {i}")))
                    .expect("publish"),
                1
            );
        }
        // Published after the jobs, on each worker's own queue: it arrives after them.
        assert_eq!(
            server
                .server
                .publish("jobs-done", note("done"))
                .expect("publish"),
            3
        );
        let mut per_worker = Vec::new();
        let mut all = Vec::new();
        for (_, inbox) in &mut workers {
            let mut got = 0;
            loop {
                let (text, _) = inbox.recv().await.expect("inbox open");
                if text == "done" {
                    break;
                }
                all.push(text);
                got += 1;
            }
            per_worker.push(got);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "every job delivered exactly once");
        assert_eq!(per_worker, [10, 10, 10], "round-robin across the group");
        for (client, _) in workers {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn disconnect_cleans_up_subscriptions() {
    bounded(async {
        let server = start(Server::builder()).await;
        let (a, _a_in) = listener(&server).await;
        a.subscribe("news.>").await.expect("subscribe");
        a.subscribe_group("news.*", "g").await.expect("subscribe");
        assert_eq!(
            server
                .server
                .publish("news.today", note("x"))
                .expect("publish"),
            1
        );
        a.close().await.expect("close");
        connections(&server, 0).await;
        assert_eq!(
            server
                .server
                .publish("news.today", note("x"))
                .expect("publish"),
            0
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn topic_errors_and_limits_are_typed() {
    bounded(async {
        let (tx, mut hooks) = mpsc::unbounded_channel();
        let server = start(
            Server::builder()
                .config(Config::default().max_subscriptions_per_connection(2))
                .on_subscribe(move |_, sub| {
                    let _ = tx.send(sub.pattern.clone());
                }),
        )
        .await;
        let client = server.client().await;
        assert_eq!(
            client.subscribe("a..b").await.expect_err("invalid").code(),
            Code::InvalidArgument
        );
        assert!(matches!(
            client.publish("a.*", note("x")).await,
            Err(goomerang::Error::InvalidTopic(_))
        ));
        assert!(matches!(
            server.server.publish("a.>", note("x")),
            Err(goomerang::Error::InvalidTopic(_))
        ));
        client.subscribe("one").await.expect("first");
        client.subscribe("two").await.expect("second");
        let err = client.subscribe("three").await.expect_err("limit");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(hooks.recv().await.as_deref(), Some("one"));
        assert_eq!(hooks.recv().await.as_deref(), Some("two"));
        assert_eq!(client.subscriptions().len(), 2);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

/// A test backplane joining servers in one process, as Redis or NATS would across machines.
#[derive(Clone, Default)]
struct MemoryBus {
    members: Arc<Mutex<Vec<(usize, Inbound)>>>,
    next: Arc<Mutex<usize>>,
}

struct BusPort {
    bus: MemoryBus,
    me: Mutex<Option<usize>>,
}

impl Backplane for BusPort {
    fn start(&self, inbound: Inbound) {
        let mut next = self.bus.next.lock().expect("lock");
        *next += 1;
        *self.me.lock().expect("lock") = Some(*next);
        self.bus
            .members
            .lock()
            .expect("lock")
            .push((*next, inbound));
    }

    fn forward(&self, event: Event) {
        let me = *self.me.lock().expect("lock");
        let others: Vec<Inbound> = self
            .bus
            .members
            .lock()
            .expect("lock")
            .iter()
            .filter(|(id, _)| Some(*id) != me)
            .map(|(_, inbound)| inbound.clone())
            .collect();
        for inbound in others {
            inbound.deliver(event.clone());
        }
    }
}

#[tokio::test]
async fn a_backplane_carries_broadcast_and_publish_across_replicas() {
    bounded(async {
        let bus = MemoryBus::default();
        let port = |bus: &MemoryBus| BusPort {
            bus: bus.clone(),
            me: Mutex::new(None),
        };
        let one = start(
            Server::builder()
                .backplane(port(&bus))
                .allow_client_broadcast(|_conn| true),
        )
        .await;
        let two = start(Server::builder().backplane(port(&bus))).await;
        let (on_one, mut one_in) = listener(&one).await;
        let (on_two, mut two_in) = listener(&two).await;
        on_one.subscribe("alerts.*").await.expect("subscribe");
        connections(&two, 1).await;
        // Published on replica two, delivered to the subscriber on replica one.
        assert_eq!(
            two.server
                .publish("alerts.fire", note("fire"))
                .expect("publish"),
            0
        );
        assert_eq!(
            one_in.recv().await,
            Some(("fire".into(), Some("alerts.fire".into())))
        );
        // A client's broadcast on replica one reaches the client on replica two.
        on_one.broadcast(note("everyone")).await.expect("broadcast");
        assert_eq!(
            two_in.recv().await.map(|m| m.0).as_deref(),
            Some("everyone")
        );
        assert_eq!(
            one_in.recv().await.map(|m| m.0).as_deref(),
            Some("everyone")
        );
        on_one.close().await.expect("close");
        on_two.close().await.expect("close");
        one.stop().await;
        two.stop().await;
    })
    .await;
}

#[tokio::test]
async fn handler_hooks_see_start_and_end_with_the_outcome() {
    bounded(async {
        let (tx, mut events) = mpsc::unbounded_channel();
        let end_tx = tx.clone();
        let server = start(
            Server::builder()
                .on_handler_start(move |ctx| {
                    let _ = tx.send(format!("start {}", ctx.metadata().type_name()));
                })
                .on_handler_end(move |ctx, outcome, _took| {
                    let _ = end_tx.send(format!(
                        "end {} {}",
                        ctx.metadata().type_name(),
                        outcome.is_ok()
                    ));
                })
                .request(|_ctx, p: Ping| async move {
                    if p.n == 0 {
                        Err(Status::invalid_argument("zero"))
                    } else {
                        Ok(Pong::default())
                    }
                }),
        )
        .await;
        let client = server.client().await;
        client
            .request::<_, Pong>(Ping {
                n: 1,
                text: String::new(),
            })
            .await
            .expect("ok");
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect_err("err");
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(events.recv().await.expect("event"));
        }
        assert_eq!(
            got,
            [
                "start test.v1.Ping",
                "end test.v1.Ping true",
                "start test.v1.Ping",
                "end test.v1.Ping false"
            ]
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn presence_counts_and_lists_the_subscribers_of_a_topic() {
    bounded(async {
        let server =
            start(Server::builder().presence_label(|conn| format!("user-{}", conn.id()))).await;
        let (exact, _a) = listener(&server).await;
        let (star, _b) = listener(&server).await;
        let (grouped, _c) = listener(&server).await;
        let (elsewhere, _d) = listener(&server).await;
        exact.subscribe("room.1").await.expect("subscribe");
        star.subscribe("room.*").await.expect("subscribe");
        star.subscribe("room.>")
            .await
            .expect("a second matching pattern");
        grouped
            .subscribe_group("room.*", "bots")
            .await
            .expect("subscribe_group");
        elsewhere.subscribe("room.2").await.expect("subscribe");

        let presence = server
            .server
            .presence("room.1", 10)
            .await
            .expect("presence");
        assert_eq!(presence.count, 3, "each connection once: {presence:?}");
        assert!(presence.complete);
        let listed: Vec<(u64, u64, &str)> = presence
            .members
            .iter()
            .map(|p| (p.replica, p.conn, p.label.as_str()))
            .collect();
        assert_eq!(
            listed,
            [(0, 1, "user-1"), (0, 2, "user-2"), (0, 3, "user-3")]
        );

        // The list is bounded; the count is not.
        let two = server.server.presence("room.1", 2).await.expect("presence");
        assert_eq!((two.count, two.members.len()), (3, 2));
        assert_eq!(
            server
                .server
                .presence("room.3", 10)
                .await
                .expect("presence")
                .count,
            2,
            "room.* and room.> match it, room.1 and room.2 do not"
        );
        assert!(matches!(
            server.server.presence("room.*", 10).await,
            Err(goomerang::Error::InvalidTopic(_))
        ));
        // Leaving takes a connection out.
        star.unsubscribe("room.*").await.expect("unsubscribe");
        star.unsubscribe("room.>").await.expect("unsubscribe");
        exact.close().await.expect("close");
        connections(&server, 3).await;
        let after = server
            .server
            .presence("room.1", 10)
            .await
            .expect("presence");
        assert_eq!(after.count, 1, "{after:?}");
        assert_eq!(after.members[0].conn, 3);
        for client in [star, grouped, elsewhere] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}
