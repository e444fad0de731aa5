//! Three replicas as separate processes on a real nats-server: fan-out, queue groups and a broker restart, counted exactly.

mod harness;

use std::collections::{BTreeMap, HashSet};

use goomerang_tests::Note;
use harness::*;
use tokio::sync::mpsc;

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

/// A broker and `n` replicas on it, in namespace `ns`.
async fn cluster(binary: String, ns: &str, n: usize, extra: &[&str]) -> (Broker, Vec<Replica>) {
    let broker = Broker::nats(binary).await;
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Replica::start(&broker.url(), ns, extra).await);
    }
    (broker, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_publish_reach_every_replica_once() {
    let Some(binary) = nats_server() else { return };
    bounded(async {
        let (_broker, replicas) = cluster(binary, "fanout", 3, &[]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_deliver_each_message_once_across_the_cluster() {
    let Some(binary) = nats_server() else { return };
    bounded(async {
        let (_broker, replicas) = cluster(binary, "groups", 3, &[]).await;
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
        // Each replica has its one queue subscription in place on the broker.
        for probe in &probes {
            probe.wait_stats(|s| s.groups == 1).await;
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
        for i in 0..N {
            let (text, _) = audit.next().await;
            assert_eq!(
                text,
                format!("job-{}", i),
                "the plain subscriber sees all, in order per publisher"
            );
        }
        // Every replica took a share, and both of its workers did.
        assert_eq!(per_worker.len(), 6, "{per_worker:?}");
        let mut grouped = 0;
        for probe in &probes {
            grouped += probe.stats().await.grouped;
        }
        assert_eq!(grouped, N as u64, "NATS handed each job to one replica");

        // The last replica's workers leave: the others take everything.
        let before: u64 = probes[2].stats().await.grouped;
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
        assert_eq!(probes[2].stats().await.grouped, before);
        assert!(rx.try_recv().is_err(), "nothing beyond the 330 jobs");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_never_stops_local_delivery_and_the_cluster_heals() {
    let Some(binary) = nats_server() else { return };
    bounded(async {
        let (mut broker, replicas) = cluster(binary, "restart", 3, &[]).await;
        let mut members = Vec::new();
        for replica in &replicas {
            let member = Member::connect(&replica.url).await;
            member.client.subscribe("news.*").await.expect("subscribe");
            members.push(member);
        }
        // Healthy: one publish reaches all three.
        members[0]
            .client
            .publish("news.x", note("before"))
            .await
            .expect("publish");
        for member in &mut members {
            assert_eq!(member.next().await.0, "before");
        }

        broker.kill().await;
        for member in &members {
            while member.counts().await.disconnects == 0 {
                tokio::task::yield_now().await;
            }
        }
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
        // Each replica told its on_error hooks.
        for member in &members {
            assert!(member.counts().await.incidents >= 1);
        }

        broker.restart().await;
        for member in &members {
            member.wait_stats(|s| s.reconnects >= 1).await;
        }
        members[1]
            .command("publish", "news.x", "after")
            .await
            .expect("publish");
        // What was queued during the outage may reach the others (NATS core
        // is at most once, and they may have come back later), but never
        // twice and never after what came later; the publisher's own
        // subscriber never gets its own events back.
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
