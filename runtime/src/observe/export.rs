//! `Metrics`: a server's or client's counters as a `prometheus-client` collector, for the application's registry or in text.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::observe::backplane::BackplaneStats;
use crate::observe::metrics::{Counters, HistogramSnapshot};

/// The Prometheus metrics of a [`Server`](crate::Server) or
/// [`Client`](crate::Client), from [`Server::metrics`](crate::Server::metrics)
/// or [`Client::metrics`](crate::Client::metrics). A cheap handle: clones
/// read the same counters, which the runtime keeps in atomics.
///
/// It is a [`prometheus_client`] [`Collector`]: [`register`](Self::register)
/// it into the registry your application already serves, or read it in the
/// OpenMetrics text format with [`render`](Self::render) (which
/// `ServerBuilder::metrics_path` serves).
///
/// ```no_run
/// # fn demo(server: &goomerang::Server) {
/// let mut registry = prometheus_client::registry::Registry::default();
/// server.metrics().register(&mut registry);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// # }
/// ```
///
/// Every metric has a `side` label (`server` or `client`); the others are
/// bounded: `type` (message types with a registered handler, `unknown` for the
/// rest; for requests, the types this side's code sends), `method` (beside
/// `type`, for routes and requests by method), `kind` (the
/// [`Incident::kind`](crate::Incident::kind) of `on_error` reports), `action`,
/// `status`. Topic names, which clients choose, are never labels. Histogram
/// buckets are set with the builders' `metrics_buckets`.
///
/// A server and a client registered into one registry give their metric
/// families twice, told apart by `side`; register them under different
/// prefixes (`Registry::sub_registry_with_prefix`) if your scraper objects.
#[derive(Clone, Debug)]
pub struct Metrics {
    counters: Arc<Counters>,
}

impl Metrics {
    pub(crate) fn new(counters: &Arc<Counters>) -> Metrics {
        Metrics {
            counters: Arc::clone(counters),
        }
    }

    /// Adds these metrics to `registry`; they are read at every scrape.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The metrics in the OpenMetrics text format (ending with `# EOF`).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A counter family with one label besides `side`: name, help, label, values.
type Labelled<'a> = (&'a str, &'a str, &'a str, Vec<(String, u64)>);

/// A histogram as read at scrape time: sum, count and per-bucket counts.
#[derive(Debug)]
struct Histogram<'a>(&'a HistogramSnapshot);

impl EncodeMetric for Histogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let HistogramSnapshot {
            sum,
            count,
            buckets,
        } = self.0;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            *sum, *count, buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snap = self.counters.snapshot();
        let side = [("side", snap.side)];
        for (name, help, value) in &snap.counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric
                .encode_family(&side)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(value, None)?;
        }
        for (name, help, value) in &snap.gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode_family(&side)?.encode_gauge(value)?;
        }

        let route_labels = |(type_name, method): &(String, Option<String>)| {
            let mut labels = vec![("side", snap.side.to_owned()), ("type", type_name.clone())];
            if let Some(method) = method {
                labels.push(("method", method.clone()));
            }
            labels
        };
        let mut metric = encoder.encode_descriptor(
            "goomerang_received_messages",
            "Messages and requests received, by route.",
            None,
            MetricType::Counter,
        )?;
        for (key, received, _) in &snap.routes {
            metric
                .encode_family(&route_labels(key))?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                    received, None,
                )?;
        }
        let mut metric = encoder.encode_descriptor(
            "goomerang_handler_duration_seconds",
            "Handler run time, by route.",
            None,
            MetricType::Histogram,
        )?;
        for (key, _, histogram) in &snap.routes {
            Histogram(histogram).encode(metric.encode_family(&route_labels(key))?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "goomerang_request_duration_seconds",
            "Requests this side made, until the answer, by type and method.",
            None,
            MetricType::Histogram,
        )?;
        for (key, histogram) in &snap.requests {
            Histogram(histogram).encode(metric.encode_family(&route_labels(key))?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "goomerang_broadcast_duration_seconds",
            "Time to queue one broadcast for every connection.",
            None,
            MetricType::Histogram,
        )?;
        Histogram(&snap.broadcasts).encode(metric.encode_family(&side)?)?;

        let labelled: [Labelled<'_>; 4] = [
            (
                "goomerang_errors",
                "Incidents reported to on_error, by kind.",
                "kind",
                snap.errors
                    .iter()
                    .map(|(k, n)| ((*k).to_owned(), *n))
                    .collect(),
            ),
            (
                "goomerang_slow_consumers",
                "Slow consumers handled, by action.",
                "action",
                snap.slow_consumers
                    .iter()
                    .map(|(k, n)| ((*k).to_owned(), *n))
                    .collect(),
            ),
            (
                "goomerang_rejected_handshakes",
                "Upgrades refused, by HTTP status.",
                "status",
                snap.rejected_handshakes
                    .iter()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect(),
            ),
            (
                "goomerang_pubsub_refused",
                "Clients' pub/sub frames refused (by middleware or a policy), by action.",
                "action",
                snap.refused
                    .iter()
                    .map(|(k, n)| ((*k).to_owned(), *n))
                    .collect(),
            ),
        ];
        for (name, help, label, values) in &labelled {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, n) in values {
                let labels = [("side", snap.side), (*label, value.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(n, None)?;
            }
        }
        Ok(())
    }
}

/// A `prometheus-client` collector reading an engine's counts at each
/// scrape: `goomerang_backplane_events_total{engine, outcome}` (forwarded,
/// relayed, grouped, dropped, failed, unclaimed),
/// `goomerang_backplane_disconnects_total`, `..._reconnects_total`, and the
/// gauges `goomerang_backplane_groups` and `goomerang_backplane_replicas`.
/// Engines hand it out from their handles' `register`.
pub fn backplane_collector(
    engine: &'static str,
    read: impl Fn() -> BackplaneStats + Send + Sync + 'static,
) -> Box<dyn Collector> {
    Box::new(BackplaneCollector {
        engine,
        read: Box::new(read),
    })
}

struct BackplaneCollector {
    engine: &'static str,
    read: Box<dyn Fn() -> BackplaneStats + Send + Sync>,
}

impl std::fmt::Debug for BackplaneCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackplaneCollector")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Collector for BackplaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::NoLabelSet;
        let c = (self.read)();
        let engine = [("engine", self.engine)];
        let mut metric = encoder.encode_descriptor(
            "goomerang_backplane_events",
            "Backplane events, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("forwarded", c.forwarded),
            ("relayed", c.relayed),
            ("grouped", c.grouped),
            ("dropped", c.dropped),
            ("failed", c.failed),
            ("unclaimed", c.unclaimed),
        ] {
            metric
                .encode_family(&[("engine", self.engine), ("outcome", outcome)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        for (name, help, n) in [
            (
                "goomerang_backplane_disconnects",
                "Broker connections lost.",
                c.disconnects,
            ),
            (
                "goomerang_backplane_reconnects",
                "Broker connections that came back.",
                c.reconnects,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric
                .encode_family(&engine)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        for (name, help, n) in [
            (
                "goomerang_backplane_groups",
                "Queue groups with a member on this replica.",
                c.groups,
            ),
            (
                "goomerang_backplane_replicas",
                "Other replicas alive, as this one knows.",
                c.replicas,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode_family(&engine)?.encode_gauge(&(n as i64))?;
        }
        Ok(())
    }
}
