//! Prometheus metrics: atomics on the hot path, the text exposition format on demand, bounded labels only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::sync::lock;
use crate::wire::message::TypeName;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Per message type, precomputed for each registered handler.
#[derive(Debug, Default)]
pub(crate) struct TypeStats {
    pub(crate) received: AtomicU64,
    pub(crate) handler: Histogram,
}

/// A server's or client's metrics. Read them with [`Metrics::render`]
/// (Prometheus text format) or serve them with `ServerBuilder::metrics_path`.
///
/// Labels are bounded: `side` (server/client), `type` (message types with a
/// registered handler, `unknown` for the rest; for requests, the types this
/// side's code sends), `method` (beside `type`, for handlers and requests
/// routed by method), `kind` (error kinds), `status`, `action`. Topic names,
/// which clients choose, are never labels.
#[derive(Debug)]
pub struct Metrics {
    side: &'static str,
    pub(crate) received_frames: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) sent_frames: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) queued_bytes: AtomicI64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) connections: AtomicI64,
    pub(crate) state: AtomicI64,
    pub(crate) broadcasts: Histogram,
    pub(crate) subscribes: AtomicU64,
    pub(crate) unsubscribes: AtomicU64,
    pub(crate) publishes: AtomicU64,
    unknown: Arc<TypeStats>,
    types: RwLock<BTreeMap<String, Arc<TypeStats>>>,
    /// Requests this side made, by payload type and method ("" by type).
    requests: RwLock<BTreeMap<(TypeName, &'static str), Arc<Histogram>>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    slow_consumers: Mutex<BTreeMap<&'static str, u64>>,
    rejected_handshakes: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub(crate) fn new(side: &'static str) -> Metrics {
        Metrics {
            side,
            received_frames: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_frames: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            queued_bytes: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            state: AtomicI64::new(0),
            broadcasts: Histogram::default(),
            subscribes: AtomicU64::new(0),
            unsubscribes: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            unknown: Arc::new(TypeStats::default()),
            types: RwLock::new(BTreeMap::new()),
            requests: RwLock::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            slow_consumers: Mutex::new(BTreeMap::new()),
            rejected_handshakes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The stats cell for a route (created once, at routing time), by its
    /// labels: `type="…"`, plus `method="…"` for a method route.
    pub(crate) fn type_stats(&self, labels: String) -> Arc<TypeStats> {
        let mut types = self
            .types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(types.entry(labels).or_default())
    }

    /// `server` or `client`.
    pub(crate) fn side(&self) -> &'static str {
        self.side
    }

    pub(crate) fn unknown_type(&self) -> &TypeStats {
        &self.unknown
    }

    pub(crate) fn observe_request(
        &self,
        type_name: TypeName,
        method: &'static str,
        took: Duration,
    ) {
        let key = (type_name, method);
        let found = self
            .requests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        let histogram = found.unwrap_or_else(|| {
            let mut requests = self
                .requests
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(requests.entry(key).or_default())
        });
        histogram.observe(took);
    }

    pub(crate) fn error(&self, kind: &'static str) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    pub(crate) fn slow_consumer(&self, disconnected: bool) {
        let action = if disconnected { "disconnect" } else { "drop" };
        *lock(&self.slow_consumers).entry(action).or_default() += 1;
    }

    pub(crate) fn rejected_handshake(&self, status: u16) {
        *lock(&self.rejected_handshakes).entry(status).or_default() += 1;
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let side = self.side;
        let mut out = String::new();
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{side=\"{side}\"}} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0).to_string();
        scalar(
            &mut out,
            "goomerang_received_frames_total",
            "counter",
            "Frames received.",
            load(&self.received_frames),
        );
        scalar(
            &mut out,
            "goomerang_received_bytes_total",
            "counter",
            "Bytes of frames received.",
            load(&self.received_bytes),
        );
        scalar(
            &mut out,
            "goomerang_sent_frames_total",
            "counter",
            "Frames written to the socket.",
            load(&self.sent_frames),
        );
        scalar(
            &mut out,
            "goomerang_sent_bytes_total",
            "counter",
            "Bytes of frames written to the socket.",
            load(&self.sent_bytes),
        );
        scalar(
            &mut out,
            "goomerang_outbound_queue_bytes",
            "gauge",
            "Bytes waiting in outbound queues.",
            gauge(&self.queued_bytes),
        );
        scalar(
            &mut out,
            "goomerang_handlers_in_flight",
            "gauge",
            "Handlers running now.",
            gauge(&self.in_flight),
        );
        scalar(
            &mut out,
            "goomerang_connections",
            "gauge",
            "Open connections.",
            gauge(&self.connections),
        );
        scalar(
            &mut out,
            "goomerang_state",
            "gauge",
            "Lifecycle state: 0 new, 1 running, 2 closing, 3 closed.",
            gauge(&self.state),
        );
        scalar(
            &mut out,
            "goomerang_subscribe_total",
            "counter",
            "Subscriptions added.",
            load(&self.subscribes),
        );
        scalar(
            &mut out,
            "goomerang_unsubscribe_total",
            "counter",
            "Subscriptions removed.",
            load(&self.unsubscribes),
        );
        scalar(
            &mut out,
            "goomerang_publish_total",
            "counter",
            "Messages published.",
            load(&self.publishes),
        );

        let _ = writeln!(
            out,
            "# HELP goomerang_received_messages_total Messages and requests received, by type.\n# TYPE goomerang_received_messages_total counter"
        );
        let types = self
            .types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all_types = types
            .iter()
            .map(|(labels, s)| (labels.as_str(), s.as_ref()))
            .chain([("type=\"unknown\"", self.unknown.as_ref())]);
        for (labels, stats) in all_types.clone() {
            let _ = writeln!(
                out,
                "goomerang_received_messages_total{{side=\"{side}\",{labels}}} {}",
                load(&stats.received)
            );
        }
        let _ = writeln!(
            out,
            "# HELP goomerang_handler_duration_seconds Handler run time, by type.\n# TYPE goomerang_handler_duration_seconds histogram"
        );
        for (labels, stats) in all_types {
            stats.handler.render(
                &mut out,
                "goomerang_handler_duration_seconds",
                &format!("side=\"{side}\",{labels}"),
            );
        }
        let _ = writeln!(
            out,
            "# HELP goomerang_request_duration_seconds Requests this side made, until the answer, by type.\n# TYPE goomerang_request_duration_seconds histogram"
        );
        for ((name, method), histogram) in self
            .requests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let method = if method.is_empty() {
                String::new()
            } else {
                format!(",method=\"{method}\"")
            };
            histogram.render(
                &mut out,
                "goomerang_request_duration_seconds",
                &format!("side=\"{side}\",type=\"{name}\"{method}"),
            );
        }
        let _ = writeln!(
            out,
            "# HELP goomerang_broadcast_duration_seconds Time to queue one broadcast for every connection.\n# TYPE goomerang_broadcast_duration_seconds histogram"
        );
        self.broadcasts.render(
            &mut out,
            "goomerang_broadcast_duration_seconds",
            &format!("side=\"{side}\""),
        );

        let _ = writeln!(
            out,
            "# HELP goomerang_errors_total Errors reported, by kind.\n# TYPE goomerang_errors_total counter"
        );
        for (kind, n) in lock(&self.errors).iter() {
            let _ = writeln!(
                out,
                "goomerang_errors_total{{side=\"{side}\",kind=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP goomerang_slow_consumers_total Slow consumers handled, by action.\n# TYPE goomerang_slow_consumers_total counter"
        );
        for (action, n) in lock(&self.slow_consumers).iter() {
            let _ = writeln!(
                out,
                "goomerang_slow_consumers_total{{side=\"{side}\",action=\"{action}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP goomerang_rejected_handshakes_total Upgrades refused, by HTTP status.\n# TYPE goomerang_rejected_handshakes_total counter"
        );
        for (status, n) in lock(&self.rejected_handshakes).iter() {
            let _ = writeln!(
                out,
                "goomerang_rejected_handshakes_total{{side=\"{side}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "side=\"server\"");
        assert!(
            out.contains("x_bucket{side=\"server\",le=\"0.00005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{side=\"server\",le=\"0.005\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{side=\"server\",le=\"1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{side=\"server\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("x_count{side=\"server\"} 3"), "{out}");
    }
}
