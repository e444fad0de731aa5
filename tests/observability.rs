//! Observability: tracing spans per connection and per handled message (type, correlation id, traceparent).

use std::io::Write;
use std::sync::{Arc, Mutex};

use goomerang::{Message, Server, Status};
use goomerang_tests::*;
use tracing_subscriber::fmt::format::FmtSpan;

/// A writer collecting everything the subscriber prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn spans_name_the_connection_and_each_message_with_its_traceparent() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every task runs here, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let server = start(Server::builder().request(|_ctx, p: Ping| async move {
            tracing::info!("inside the handler");
            Ok::<_, Status>(Pong {
                n: p.n,
                text: p.text,
            })
        }))
        .await;
        let client = server.client().await;
        client
            .request::<_, Pong>(
                Message::new(Ping {
                    n: 1,
                    text: String::new(),
                })
                .header("traceparent", TRACEPARENT),
            )
            .await
            .expect("reply");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
    let text = captured.text();
    assert!(text.contains("goomerang.connection{conn=1"), "{text}");
    let handled = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .expect("the handler's event was logged");
    assert!(
        handled.contains("goomerang.handle{type=test.v1.Ping id=1"),
        "{handled}"
    );
    assert!(handled.contains(TRACEPARENT), "{handled}");
}

/// Scrapes `path`: asserts a 200 and returns the body.
async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let response = http_get(addr, path).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// The value of the sample line `name{labels}` (exact label text).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn a_scrape_after_traffic_shows_the_counters() {
    bounded(async {
        let server = start(
            Server::builder()
                .metrics_path("/metrics")
                .allowed_origins(["https://app.example.com"])
                .request(|_ctx, p: Ping| async move {
                    Ok::<_, Status>(Pong {
                        n: p.n,
                        text: p.text,
                    })
                })
                .message(|_ctx, _n: Note| async {}),
        )
        .await;
        let client = server.client().await;
        for n in 0..5 {
            client
                .request::<_, Pong>(Ping {
                    n,
                    text: String::new(),
                })
                .await
                .expect("reply");
        }
        client.send(Note::default()).await.expect("send");
        client
            .send(Seq { n: 1 })
            .await
            .expect("unknown type, reported");
        client.subscribe("news.>").await.expect("subscribe");
        client
            .publish("news.today", Note::default())
            .await
            .expect("publish");
        server.server.broadcast(Note::default()).expect("broadcast");
        let refused = goomerang::Client::builder()
            .header("origin", "https://evil.com")
            .connect(&server.url())
            .await;
        assert!(
            matches!(refused, Err(goomerang::Error::Refused { status: 403, .. })),
            "{refused:?}"
        );
        // Round trip so the server has handled everything sent before.
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("reply");

        let response = http_get(server.addr, "/metrics").await;
        assert!(
            response.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{response}"
        );
        let text = scrape(server.addr, "/metrics").await;
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"goomerang_received_messages_total{side="server",type="test.v1.Ping"}"#
            ),
            6.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_received_messages_total{side="server",type="test.v1.Note"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_received_messages_total{side="server",type="unknown"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_handler_duration_seconds_count{side="server",type="test.v1.Ping"}"#
            ),
            6.0
        );
        assert!(sample(&text, r#"goomerang_received_bytes_total{side="server"}"#) > 0.0);
        // 6 replies, the SUBSCRIBE ack, the report of the unknown Seq, the published and the
        // broadcast MESSAGE. Counted after each flush: the last may land just after its
        // reply did, so at least 9 of the 10 are counted here.
        let sent = sample(&text, r#"goomerang_sent_frames_total{side="server"}"#);
        assert!((9.0..=10.0).contains(&sent), "{sent}");
        assert_eq!(
            sample(&text, r#"goomerang_connections{side="server"}"#),
            1.0
        );
        assert_eq!(sample(&text, r#"goomerang_state{side="server"}"#), 1.0);
        assert_eq!(
            sample(&text, r#"goomerang_subscribe_total{side="server"}"#),
            1.0
        );
        assert_eq!(
            sample(&text, r#"goomerang_publish_total{side="server"}"#),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_broadcast_duration_seconds_count{side="server"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_rejected_handshakes_total{side="server",status="403"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"goomerang_errors_total{side="server",kind="unknown_route"}"#
            ),
            1.0
        );
        // The client side measures its requests.
        let client_text = client.metrics().render();
        assert_eq!(
            sample(
                &client_text,
                r#"goomerang_request_duration_seconds_count{side="client",type="test.v1.Ping"}"#
            ),
            6.0
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf();
    let dashboard =
        std::fs::read_to_string(root.join("examples/grafana/goomerang.json")).expect("dashboard");
    let exported: std::collections::BTreeSet<String> = Server::builder()
        .build()
        .expect("valid routes")
        .metrics()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        // OpenMetrics names a counter's family without the `_total` its samples carry.
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        })
        .collect();
    let mut queried = std::collections::BTreeSet::new();
    for (i, _) in dashboard.match_indices("goomerang_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_owned();
        queried.insert(base);
    }
    queried.remove("goomerang_");
    assert!(queried.len() >= 15, "the dashboard queries {queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the runtime does not export: {missing:?}"
    );
    let unused: Vec<_> = exported.difference(&queried).collect();
    assert!(
        unused.is_empty(),
        "exported metrics without a panel: {unused:?}"
    );
}

#[tokio::test]
async fn metrics_join_the_applications_registry_with_the_chosen_buckets() {
    use goomerang::prometheus_client::{encoding::text::encode, metrics::counter::Counter};

    const PING: &str = r#"side="server",type="test.v1.Ping""#;
    bounded(async {
        let server = start(Server::builder().metrics_buckets([0.5, 30.0]).request(
            |_ctx, p: Ping| async move {
                Ok::<_, Status>(Pong {
                    n: p.n,
                    text: p.text,
                })
            },
        ))
        .await;
        let mut registry = goomerang::prometheus_client::registry::Registry::default();
        let app_requests = Counter::<u64>::default();
        registry.register(
            "app_requests",
            "The application's own counter.",
            app_requests.clone(),
        );
        server.server.metrics().register(&mut registry);
        app_requests.inc();

        let client = server.client().await;
        for n in 0..3 {
            client
                .request::<_, Pong>(Ping {
                    n,
                    text: String::new(),
                })
                .await
                .expect("reply");
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert_eq!(sample(&text, "app_requests_total"), 1.0);
        let handler = "goomerang_handler_duration_seconds_bucket{le=";
        // Exactly the buckets asked for, and +Inf: every request within 0.5 s.
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(handler) && l.contains(r#"type="test.v1.Ping""#))
            .collect();
        assert_eq!(buckets.len(), 3, "{text}");
        assert_eq!(sample(&text, &format!(r#"{handler}"0.5",{PING}}}"#)), 3.0);
        assert_eq!(sample(&text, &format!(r#"{handler}"30.0",{PING}}}"#)), 3.0);
        assert_eq!(sample(&text, &format!(r#"{handler}"+Inf",{PING}}}"#)), 3.0);
        // A scrape reads the counters live: more traffic, higher counts.
        client
            .request::<_, Pong>(Ping::default())
            .await
            .expect("reply");
        let mut again = String::new();
        encode(&mut again, &registry).expect("encode");
        assert_eq!(
            sample(
                &again,
                r#"goomerang_handler_duration_seconds_count{side="server",type="test.v1.Ping"}"#
            ),
            4.0
        );
    })
    .await;
}

#[test]
fn unusable_buckets_are_refused_at_build() {
    for (bounds, reason) in [
        (vec![], "no bucket given"),
        (vec![0.1, 0.1], "bounds must be strictly increasing"),
        (vec![0.5, 0.1], "bounds must be strictly increasing"),
        (
            vec![0.0, 1.0],
            "every bound must be a finite number of seconds above zero",
        ),
        (
            vec![f64::NAN],
            "every bound must be a finite number of seconds above zero",
        ),
        (
            vec![1.0, f64::INFINITY],
            "every bound must be a finite number of seconds above zero",
        ),
    ] {
        let err = Server::builder()
            .metrics_buckets(bounds.clone())
            .build()
            .expect_err("refused");
        match err {
            goomerang::BuildError::InvalidBuckets { reason: got, .. } => {
                assert_eq!(got, reason, "{bounds:?}")
            }
            other => panic!("{bounds:?}: {other}"),
        }
        let err = goomerang::Client::builder()
            .metrics_buckets(bounds.clone())
            .build()
            .expect_err("refused");
        assert!(
            matches!(err, goomerang::BuildError::InvalidBuckets { .. }),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_burst_of_requests_from_one_task_goes_out_in_one_write_after_the_first() {
    const CLIENT: &str = r#"{side="client"}"#;
    bounded(async {
        let server = start(echo(Server::builder())).await;
        let client = server.client().await;
        let counts = || {
            let text = client.metrics().render();
            (
                sample(&text, &format!("goomerang_socket_writes_total{CLIENT}")),
                sample(&text, &format!("goomerang_sent_frames_total{CLIENT}")),
            )
        };
        // One request at a time: each is written by its caller, alone.
        let before = counts();
        for n in 0..3 {
            let pong: Pong = client
                .request(Ping {
                    n,
                    text: "one".into(),
                })
                .await
                .expect("reply")
                .into_inner();
            assert_eq!(pong.n, n);
        }
        let after = counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (3.0, 3.0));

        // 32 started by one task at once: the first goes out alone, as its
        // caller cannot know more follow; the other 31 wait for the task's
        // poll to end and go out together.
        let burst = (0..32).map(|n| {
            client.request::<_, Pong>(Ping {
                n,
                text: "burst".into(),
            })
        });
        let replies = futures_util::future::join_all(burst).await;
        let ns: Vec<u64> = replies
            .into_iter()
            .map(|reply| reply.expect("reply").into_inner().n)
            .collect();
        assert_eq!(ns, (0..32).collect::<Vec<_>>());
        let done = counts();
        assert_eq!((done.0 - after.0, done.1 - after.1), (2.0, 32.0));
        server.stop().await;
    })
    .await;
}
