//! Three replicas as separate processes on a real broker (nats-server, redis-server): fan-out, queue groups and a broker restart, counted exactly.

mod harness;

use std::collections::{BTreeMap, HashSet};

use goomerang_tests::Note;
use harness::*;
use tokio::sync::mpsc;

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

/// A broker and `n` replicas on it, in namespace `ns`.
async fn cluster(kind: Kind, binary: String, ns: &str, n: usize) -> (Broker, Vec<Replica>) {
    let broker = Broker::start(kind, binary).await;
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Replica::start(&broker, ns, &[]).await);
    }
    (broker, replicas)
}

/// One test per scenario and broker.
macro_rules! on_every_broker {
    ($($scenario:ident),* $(,)?) => {
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::Nats).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::Redis).await;
                }
            )*
        }
    };
}

on_every_broker!(
    broadcast_and_publish_reach_every_replica_once,
    queue_groups_deliver_each_message_once_across_the_cluster,
    a_broker_restart_never_stops_local_delivery_and_the_cluster_heals,
    presence_spans_the_cluster_and_notices_a_dead_replica,
    a_dead_replicas_clients_move_to_another_and_keep_receiving,
    history_kept_on_the_broker_follows_clients_to_any_replica,
);

async fn broadcast_and_publish_reach_every_replica_once(kind: Kind) {
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        let (_broker, replicas) = cluster(kind, binary, "fanout", 3).await;
        // Two members on each replica: 0,1 on the first, 2,3 on the second, 4,5 on the third.
        let mut members = Vec::new();
        for replica in &replicas {
            for _ in 0..2 {
                members.push(Member::connect(&replica.url).await);
            }
        }
        for member in &members {
            member.client.subscribe("room.*").await.expect("subscribe");
        }
        let all: Vec<usize> = (0..members.len()).collect();
        let expect =
            async |members: &mut Vec<Member>, who: &[usize], want: (&str, Option<&str>)| {
                for &i in who {
                    let got = members[i].next().await;
                    assert_eq!(
                        (got.0.as_str(), got.1.as_deref()),
                        want,
                        "member {i} (replica {})",
                        i / 2
                    );
                }
            };

        // The server's broadcast on the first replica.
        let ack = members[0]
            .command("broadcast", "", "b1")
            .await
            .expect("broadcast");
        assert_eq!(ack.reached, 2, "two local connections");
        expect(&mut members, &all, ("b1", None)).await;

        // A client's broadcast on the second.
        members[2]
            .client
            .broadcast(note("b2"))
            .await
            .expect("broadcast");
        expect(&mut members, &all, ("b2", None)).await;

        // The server's publish on the third.
        let ack = members[4]
            .command("publish", "room.a", "p1")
            .await
            .expect("publish");
        assert_eq!(ack.reached, 2, "two local subscribers");
        expect(&mut members, &all, ("p1", Some("room.a"))).await;

        // A client's publish on the first.
        members[1]
            .client
            .publish("room.b", note("p2"))
            .await
            .expect("publish");
        expect(&mut members, &all, ("p2", Some("room.b"))).await;

        // broadcast_except on the second: everyone but the asking connection.
        let ack = members[3]
            .command("except", "", "e1")
            .await
            .expect("except");
        assert_eq!(ack.reached, 1, "its neighbour only, locally");
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != 3).collect();
        expect(&mut members, &others, ("e1", None)).await;

        // A topic nobody subscribed to reaches nobody; then a last broadcast
        // from the first replica closes the run.
        members[0]
            .client
            .publish("other.x", note("nobody"))
            .await
            .expect("publish");
        members[0]
            .command("broadcast", "", "end")
            .await
            .expect("end");
        expect(&mut members, &all, ("end", None)).await;
        for (i, member) in members.iter_mut().enumerate() {
            assert_eq!(member.drain(), [], "member {i} got more than it should");
        }

        // Each replica relayed exactly what the others started: 6 events
        // started (b1, b2, p1, p2, nobody, end), e1 too: 7, of which each
        // replica started some and relayed the rest.
        let started = [4, 2, 1]; // b1 p2 nobody end | b2 e1 | p1
        for (r, started_here) in started.iter().enumerate() {
            let stats = members[r * 2].stats().await;
            assert_eq!(stats.forwarded, *started_here, "replica {r} forwarded");
            assert_eq!(stats.relayed, 7 - started_here, "replica {r} relayed");
            assert_eq!(stats.dropped, 0);
        }
    })
    .await;
}

async fn queue_groups_deliver_each_message_once_across_the_cluster(kind: Kind) {
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        let (_broker, replicas) = cluster(kind, binary, "groups", 3).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Two workers on each replica (tags 0..6, replica = tag / 2), and a
        // plain subscriber on the last one that sees everything.
        let mut workers = Vec::new();
        for (r, replica) in replicas.iter().enumerate() {
            for w in 0..2 {
                let member = Member::connect(&replica.url).await;
                member
                    .client
                    .subscribe_group("jobs.*", "workers")
                    .await
                    .expect("subscribe_group");
                workers.push(member.forward_to(r * 2 + w, tx.clone()));
            }
        }
        let mut audit = Member::connect(&replicas[2].url).await;
        audit.client.subscribe("jobs.*").await.expect("subscribe");
        let probes: Vec<Member> = {
            let mut probes = Vec::new();
            for replica in &replicas {
                probes.push(Member::connect(&replica.url).await);
            }
            probes
        };
        // Each replica has its group in place on the broker, and knows of
        // the cluster's one group.
        for probe in &probes {
            probe.wait_stats(|s| s.groups == 1).await;
        }
        for probe in &probes {
            probe.wait_stats(|s| s.known_groups == 1).await;
        }

        // 150 published by the first replica's server, 150 by a client of the second.
        const N: usize = 300;
        for i in 0..N / 2 {
            probes[0]
                .command("publish", "jobs.new", &format!("job-{i}"))
                .await
                .expect("publish");
        }
        for i in N / 2..N {
            probes[1]
                .client
                .publish("jobs.new", note(&format!("job-{i}")))
                .await
                .expect("publish");
        }
        let mut seen = HashSet::new();
        let mut per_worker = BTreeMap::new();
        while seen.len() < N {
            let (tag, (text, topic)) = rx.recv().await.expect("a job");
            assert_eq!(topic.as_deref(), Some("jobs.new"));
            assert!(seen.insert(text.clone()), "{text} delivered twice");
            *per_worker.entry(tag).or_insert(0) += 1;
        }
        // The plain subscriber sees every job once, in order per publisher
        // (the two publishers' streams may interleave).
        let mut from = [Vec::new(), Vec::new()];
        for _ in 0..N {
            let (text, _) = audit.next().await;
            let n: usize = text
                .strip_prefix("job-")
                .and_then(|n| n.parse().ok())
                .expect("a job");
            from[n / (N / 2)].push(n);
        }
        assert_eq!(from[0], (0..N / 2).collect::<Vec<_>>());
        assert_eq!(from[1], (N / 2..N).collect::<Vec<_>>());
        // Every replica took a share, and both of its workers did.
        assert_eq!(per_worker.len(), 6, "{per_worker:?}");
        let mut grouped = 0;
        for probe in &probes {
            grouped += probe.stats().await.grouped;
        }
        assert_eq!(
            grouped, N as u64,
            "the broker handed each job to one replica"
        );

        // The last replica's workers leave: the others take everything.
        drop(workers.split_off(4));
        probes[2].wait_stats(|s| s.groups == 0).await;
        for i in 0..30 {
            probes[2]
                .command("publish", "jobs.new", &format!("late-{i}"))
                .await
                .expect("publish");
        }
        let mut late = HashSet::new();
        while late.len() < 30 {
            let (tag, (text, _)) = rx.recv().await.expect("a late job");
            assert!(tag < 4, "{text} reached a worker that left (tag {tag})");
            assert!(late.insert(text.clone()), "{text} delivered twice");
        }
        // (A late job the last replica popped as its workers left went
        // back for another replica: none was lost.)
        for probe in &probes {
            assert_eq!(probe.stats().await.unclaimed, 0);
        }
        assert!(rx.try_recv().is_err(), "nothing beyond the 330 jobs");
    })
    .await;
}

async fn a_broker_restart_never_stops_local_delivery_and_the_cluster_heals(kind: Kind) {
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        step("the cluster to start");
        let (mut broker, replicas) = cluster(kind, binary, "restart", 3).await;
        let mut members = Vec::new();
        for replica in &replicas {
            let member = Member::connect(&replica.url).await;
            member.client.subscribe("news.*").await.expect("subscribe");
            members.push(member);
        }
        step("the healthy publish to reach all three");
        // Healthy: one publish reaches all three.
        members[0]
            .client
            .publish("news.x", note("before"))
            .await
            .expect("publish");
        for member in &mut members {
            assert_eq!(member.next().await.0, "before");
        }

        step("the broker to die and every replica to see it");
        broker.kill().await;
        for member in &members {
            while member.counts().await.disconnects == 0 {
                tokio::task::yield_now().await;
            }
        }
        step("the publishes during the outage");
        // The broker is gone: publishing still returns at once and reaches
        // the local subscriber, 200 times over.
        for i in 0..200 {
            let ack = members[0]
                .command("publish", "news.x", &format!("during-{i}"))
                .await
                .expect("publish while the broker is down");
            assert_eq!(ack.reached, 1);
        }
        for i in 0..200 {
            assert_eq!(members[0].next().await.0, format!("during-{i}"));
        }
        step("the replicas' incident counts");
        // Each replica told its on_error hooks.
        for member in &members {
            assert!(member.counts().await.incidents >= 1);
        }

        step("the broker to restart");
        broker.restart().await;
        step("every replica to reconnect");
        for member in &members {
            member.wait_stats(|s| s.reconnects >= 1).await;
        }
        // The first replica has dealt with all 201 of its events (handed
        // over, or refused while the broker was away), and the broker has
        // processed what it took: the next stats call is a barrier.
        step("the first replica to settle its 201 events");
        let settled = members[0]
            .wait_stats(|s| s.forwarded + s.failed + s.dropped == 201)
            .await;
        assert!(settled.forwarded >= 1, "{settled:?}");
        members[0].stats().await;
        // "after" comes from the same replica as the outage's events, so
        // every replica gets it after them (a replica delivers its own
        // publishes locally at once, ahead of other replicas' in transit).
        step("the publish after the restart");
        members[0]
            .command("publish", "news.x", "after")
            .await
            .expect("publish");
        // What was queued during the outage may reach the others (delivery
        // is at most once, and they may have come back later), but never
        // twice and never after what was published once it was all handed
        // over; the publisher's own subscriber never gets its own events back.
        step("every member to get \"after\"");
        for (i, member) in members.iter_mut().enumerate() {
            let mut outage = HashSet::new();
            loop {
                let (text, _) = member.next().await;
                if text == "after" {
                    break;
                }
                assert!(i != 0, "replica 0 got its own {text} back");
                assert!(text.starts_with("during-"), "{text}");
                assert!(outage.insert(text.clone()), "{text} twice");
            }
        }
        // The engines' metrics say what their counts say, beside the
        // server's own count of the incidents its hooks got. (How many
        // disconnects a kill makes depends on the reconnect attempts, so the
        // counts are compared, not predicted.)
        let engine = match kind {
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        };
        for member in &members {
            // A replica may count an event after its subscribers got it:
            // the metrics are compared with counts read on both sides of
            // them, once the two reads agree.
            let (counts, metrics) = loop {
                let before = member.counts().await;
                let mut metrics = Vec::new();
                for name in [
                    "goomerang_backplane_disconnects_total",
                    "goomerang_backplane_reconnects_total",
                ] {
                    metrics.push(member.metric(&format!("{name}{{engine=\"{engine}\"}}")).await);
                }
                for outcome in ["forwarded", "relayed"] {
                    let series = format!(
                        "goomerang_backplane_events_total{{engine=\"{engine}\",outcome=\"{outcome}\"}}"
                    );
                    metrics.push(member.metric(&series).await);
                }
                let incidents = "goomerang_errors_total{side=\"server\",kind=\"backplane\"}";
                metrics.push(member.metric(incidents).await);
                if member.counts().await == before {
                    break (before, metrics);
                }
            };
            assert!(
                counts.disconnects >= 1 && counts.reconnects >= 1,
                "{counts:?}"
            );
            let want = [
                counts.disconnects,
                counts.reconnects,
                counts.forwarded,
                counts.relayed,
                counts.incidents,
            ]
            .map(Some);
            assert_eq!(
                metrics, want,
                "disconnects, reconnects, forwarded, relayed, incidents"
            );
        }
        members[2]
            .command("broadcast", "", "end")
            .await
            .expect("end");
        for member in &mut members {
            assert_eq!(member.next().await.0, "end");
            assert_eq!(member.drain(), []);
        }
    })
    .await;
}

async fn presence_spans_the_cluster_and_notices_a_dead_replica(kind: Kind) {
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        let (_broker, mut replicas) = cluster(kind, binary, "presence", 3).await;
        // Replica 0: two in room.1; replica 1: one by room.*; replica 2: a
        // queue-group member by room.> and one elsewhere.
        let mut members = Vec::new();
        for (r, pattern, group) in [
            (0, "room.1", None),
            (0, "room.1", None),
            (1, "room.*", None),
            (2, "room.>", Some("bots")),
            (2, "hall", None),
        ] {
            let member = Member::connect(&replicas[r].url).await;
            match group {
                None => member.client.subscribe(pattern).await,
                Some(group) => member.client.subscribe_group(pattern, group).await,
            }
            .expect("subscribe");
            members.push(member);
        }
        // Every replica has heard from the other two.
        for r in [0, 2, 4] {
            members[r].wait_stats(|s| s.replicas == 2).await;
        }
        for r in [0, 2, 4] {
            let (count, complete, mut listed) = members[r].presence("room.1", 10).await;
            assert_eq!(
                (count, complete),
                (4, true),
                "asked on member {r}'s replica"
            );
            assert_eq!(listed.len(), 4, "{listed:?}");
            listed.sort();
            listed.dedup();
            assert_eq!(listed.len(), 4, "four distinct connections: {listed:?}");
        }
        // The list is bounded and the asking replica's own come first.
        let (count, _, listed) = members[2].presence("room.1", 1).await;
        assert_eq!((count, listed.len()), (4, 1));
        let (count, complete, _) = members[0].presence("hall", 10).await;
        assert_eq!((count, complete), (1, true));

        // Replica 2 dies: it no longer counts. Until its silence marks it
        // dead, the answer says it is incomplete; after, complete again.
        replicas[2].kill().await;
        let (count, _, listed) = members[0].presence("room.1", 10).await;
        assert_eq!((count, listed.len()), (3, 3));
        members[0].wait_stats(|s| s.replicas == 1).await;
        let (count, complete, _) = members[0].presence("room.1", 10).await;
        assert_eq!((count, complete), (3, true));
    })
    .await;
}

async fn a_dead_replicas_clients_move_to_another_and_keep_receiving(kind: Kind) {
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        let (_broker, mut replicas) = cluster(kind, binary, "failover", 3).await;
        let fallbacks = [replicas[1].url.as_str(), replicas[2].url.as_str()];
        let mut mover = Member::connect_with_fallbacks(&replicas[0].url, &fallbacks).await;
        mover.client.subscribe("news.*").await.expect("subscribe");
        let publisher = Member::connect(&replicas[2].url).await;
        publisher
            .client
            .publish("news.a", note("before"))
            .await
            .expect("publish");
        assert_eq!(mover.next().await.0, "before");

        // Its replica dies: it reconnects to the next URL, renews its
        // subscription there, and what is published reaches it again.
        replicas[0].kill().await;
        let on_second = Member::connect(&replicas[1].url).await;
        loop {
            // The first replica it reaches is the second (the first is
            // gone); its stats count the member's subscription by asking
            // presence there.
            let (count, ..) = on_second.presence("news.a", 10).await;
            if count >= 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        publisher
            .client
            .publish("news.a", note("after"))
            .await
            .expect("publish");
        assert_eq!(mover.next().await.0, "after");
        assert_eq!(mover.drain(), []);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_redis_follows_its_client_to_another_replica() {
    let Some(binary) = broker_binary(Kind::Redis) else {
        return;
    };
    bounded(async {
        let (_broker, mut replicas) = cluster(Kind::Redis, binary, "sessions", 2).await;
        let member =
            Member::connect_with_fallbacks(&replicas[0].url, &[replicas[1].url.as_str()]).await;
        let ack = member.command("login", "", "ada").await.expect("login");
        assert_eq!(ack.members, ["ada"]);
        let key = member.client.session_key().expect("a session key");

        // Its replica dies; on the other one, the session is there.
        replicas[0].kill().await;
        // (A call that went out on the dead connection before the client
        // noticed fails UNAVAILABLE; the next goes to the second replica.)
        let ack = loop {
            match member.command("whoami", "", "").await {
                Ok(ack) => break ack,
                Err(status) if status.code() == goomerang::Code::Unavailable => continue,
                Err(status) => panic!("whoami: {status:?}"),
            }
        };
        assert_eq!(ack.members, ["ada"], "resumed on the second replica");
        assert_eq!(member.client.session_key(), Some(key));
    })
    .await;
}

/// Topic history numbered and kept on the broker (Redis streams, JetStream).
async fn history_kept_on_the_broker_follows_clients_to_any_replica(kind: Kind) {
    use goomerang::pubsub::{Position, Recovery};
    let Some(binary) = broker_binary(kind) else {
        return;
    };
    bounded(async {
        step("the broker and replicas to start");
        let broker = Broker::start(kind, binary).await;
        let history = ["--history", "chat.*"];
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(Replica::start(&broker, "history", &history).await);
        }
        step("the mover to connect and subscribe");
        let mut mover =
            Member::connect_with_fallbacks(&replicas[0].url, &[replicas[1].url.as_str()]).await;
        mover
            .client
            .subscribe("chat.room")
            .await
            .expect("subscribe");
        // A queue group on a history topic takes each message once, unnumbered.
        let mut worker = Member::connect(&replicas[1].url).await;
        worker
            .client
            .subscribe_group("chat.*", "workers")
            .await
            .expect("subscribe_group");
        let publisher = Member::connect(&replicas[2].url).await;
        step("the queue group to register");
        worker.wait_stats(|s| s.groups == 1).await;
        if matches!(kind, Kind::Redis) {
            // (NATS finds the group's members itself.)
            publisher.wait_stats(|s| s.known_groups == 1).await;
        }
        step("1 and 2 to reach the mover");
        for text in ["1", "2"] {
            publisher
                .client
                .publish("chat.room", note(text))
                .await
                .expect("publish");
        }
        assert_eq!(mover.next().await.0, "1");
        assert_eq!(mover.next().await.0, "2");
        let before = mover.client.position("chat.room").expect("a position");
        assert_eq!(before.offset, 2, "numbered by the broker: {before:?}");
        assert!(!before.epoch.is_empty());

        // Its replica dies while 3 and 4 are published; on the second
        // replica (which numbered history kept in step) it gets them, once
        // and in order, whether replayed or live, then 5.
        step("the mover's replica to die and 3 and 4 to reach it elsewhere");
        replicas[0].kill().await;
        for text in ["3", "4"] {
            publisher
                .client
                .publish("chat.room", note(text))
                .await
                .expect("publish");
        }
        assert_eq!(mover.next().await.0, "3");
        assert_eq!(mover.next().await.0, "4");
        // Renewed on the second replica: a publish now reaches it there.
        step("the mover's subscription to be renewed on the second replica");
        let on_second = Member::connect(&replicas[1].url).await;
        while on_second.presence("chat.room", 10).await.0 == 0 {
            tokio::task::yield_now().await;
        }
        publisher
            .client
            .publish("chat.room", note("5"))
            .await
            .expect("publish");
        assert_eq!(mover.next().await.0, "5");
        let after = mover.client.position("chat.room").expect("a position");
        assert_eq!(
            (after.epoch.as_str(), after.offset),
            (before.epoch.as_str(), 5)
        );
        assert_eq!(mover.drain(), []);
        let mut taken: Vec<String> = Vec::new();
        for _ in 0..5 {
            taken.push(worker.next().await.0);
        }
        assert_eq!(taken, ["1", "2", "3", "4", "5"], "the group took each once");

        // Recovery on another replica, made explicit: from 2, a new client
        // of the third replica gets 3, 4 and 5 replayed before the confirmation.
        let mut late = Member::connect(&replicas[2].url).await;
        assert_eq!(
            late.client
                .subscribe_from("chat.room", &before)
                .await
                .expect("subscribe_from"),
            Recovery::Recovered
        );
        for want in ["3", "4", "5"] {
            assert_eq!(late.next().await.0, want);
        }
        assert_eq!(late.drain(), []);

        // A replica started after all of it holds nothing in memory: it
        // reads the broker's history, so recovery there works the same.
        let fourth = Replica::start(&broker, "history", &history).await;
        let mut newcomer = Member::connect(&fourth.url).await;
        assert_eq!(
            newcomer
                .client
                .subscribe_from("chat.room", &before)
                .await
                .expect("subscribe_from"),
            Recovery::Recovered
        );
        for want in ["3", "4", "5"] {
            assert_eq!(newcomer.next().await.0, want);
        }
        let at = newcomer.client.position("chat.room").expect("a position");
        assert_eq!((at.epoch.as_str(), at.offset), (before.epoch.as_str(), 5));
        // Live from there on, numbered in the same history.
        publisher
            .client
            .publish("chat.room", note("6"))
            .await
            .expect("publish");
        assert_eq!(newcomer.next().await.0, "6");
        assert_eq!(mover.next().await.0, "6");
        assert_eq!(newcomer.drain(), []);
        // A position in a history the broker does not have: a typed refusal,
        // nothing replayed, and the subscription still live.
        let mut stranger = Member::connect(&fourth.url).await;
        assert_eq!(
            stranger
                .client
                .subscribe_from("chat.room", &Position::new("no-such-epoch", 3))
                .await
                .expect("subscribe_from"),
            Recovery::Unrecoverable
        );
        publisher
            .client
            .publish("chat.room", note("7"))
            .await
            .expect("publish");
        assert_eq!(stranger.next().await.0, "7");
        assert_eq!(stranger.drain(), []);
        // A fresh subscriber of the late replica learns the broker's
        // position at once (a replica that had not heard of the topic asks).
        let third = Replica::start(&broker, "history", &history).await;
        let fresh = Member::connect(&third.url).await;
        fresh
            .client
            .subscribe("chat.room")
            .await
            .expect("subscribe");
        let now = fresh.client.position("chat.room").expect("a position");
        assert_eq!((now.epoch.as_str(), now.offset), (before.epoch.as_str(), 7));
    })
    .await;
}
