//! `Counters`: what every layer counts, in atomics on the hot path and bounded label sets, read by the exporter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::sync::lock;
use crate::wire::message::TypeName;

/// Upper bounds of the latency histograms, in seconds, unless the builder sets others.
pub(crate) const DEFAULT_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// A latency histogram: one atomic per bucket, no lock.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: Arc<[f64]>,
    /// The bounds in whole nanoseconds (rounded down: a duration is at or
    /// below a bound exactly when its nanoseconds are at or below this), so
    /// that placing an observation compares integers.
    limits: Box<[u64]>,
    /// Observations per bucket (not cumulative), then those above the last
    /// bound: the count is their sum, with no counter of its own to update.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn new(bounds: &Arc<[f64]>) -> Histogram {
        Histogram {
            bounds: Arc::clone(bounds),
            // `as` saturates: a bound past u64::MAX nanoseconds (585 years) holds everything.
            limits: bounds.iter().map(|&b| (b * 1e9).floor() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // The bounds are strictly increasing (checked when built): the first
        // one at or above `took`, by bisection; past the last, the overflow bucket.
        let i = self.limits.partition_point(|&limit| limit < nanos);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The values now.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .chain([&f64::MAX])
            .zip(self.buckets.iter())
            .map(|(&bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot {
            sum,
            count,
            buckets,
        }
    }
}

/// A histogram as read at one moment.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub(crate) sum: f64,
    pub(crate) count: u64,
    /// `(upper bound, observations in that bucket)`, not cumulative, ending
    /// with `f64::MAX` for +Inf.
    pub(crate) buckets: Vec<(f64, u64)>,
}

/// The counters of one route (a handled method or type), created once at
/// build time and held by the route: counting is two atomics, no lookup.
#[derive(Debug)]
pub(crate) struct RouteStats {
    received: AtomicU64,
    handler: Histogram,
}

impl RouteStats {
    fn new(bounds: &Arc<[f64]>) -> RouteStats {
        RouteStats {
            received: AtomicU64::new(0),
            handler: Histogram::new(bounds),
        }
    }

    /// A message or request for this route arrived.
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Its handler finished after `took`.
    pub(crate) fn handled(&self, took: Duration) {
        self.handler.observe(took);
    }
}

/// A route's labels: the payload type, and the method for a method route.
pub(crate) type RouteKey = (String, Option<String>);

/// A server's or client's counters. Labels are bounded: types and methods
/// with a registered handler (`unknown` for the rest), the types and methods
/// this side's code requests, error kinds, slow-consumer actions, HTTP
/// statuses. Topic names, which clients choose, are never labels.
#[derive(Debug)]
pub(crate) struct Counters {
    side: &'static str,
    bounds: Arc<[f64]>,
    received_frames: AtomicU64,
    received_bytes: AtomicU64,
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    socket_writes: AtomicU64,
    queued_bytes: AtomicI64,
    in_flight: AtomicI64,
    connections: AtomicI64,
    state: AtomicI64,
    broadcasts: Histogram,
    subscribes: AtomicU64,
    unsubscribes: AtomicU64,
    publishes: AtomicU64,
    unknown: Arc<RouteStats>,
    routes: RwLock<BTreeMap<RouteKey, Arc<RouteStats>>>,
    /// Requests this side made, by payload type and method ("" by type).
    requests: RwLock<BTreeMap<RequestLabels, Histogram>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    slow_consumers: Mutex<BTreeMap<&'static str, u64>>,
    rejected_handshakes: Mutex<BTreeMap<u16, u64>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// What the exporter reads: every value at one moment (each read on its own).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) side: &'static str,
    /// `(name, help, value)` of the counters without labels.
    pub(crate) counters: Vec<(&'static str, &'static str, u64)>,
    /// `(name, help, value)` of the gauges without labels.
    pub(crate) gauges: Vec<(&'static str, &'static str, i64)>,
    /// Per route: labels, messages received, handler histogram.
    pub(crate) routes: Vec<(RouteKey, u64, HistogramSnapshot)>,
    /// Per request type and method ("" by type).
    pub(crate) requests: Vec<(RouteKey, HistogramSnapshot)>,
    pub(crate) broadcasts: HistogramSnapshot,
    pub(crate) errors: Vec<(&'static str, u64)>,
    pub(crate) slow_consumers: Vec<(&'static str, u64)>,
    pub(crate) rejected_handshakes: Vec<(u16, u64)>,
    pub(crate) refused: Vec<(&'static str, u64)>,
}

impl Counters {
    /// Counters for `side` (`server` or `client`) with latency buckets `bounds`
    /// (strictly increasing, finite, checked by the builder).
    pub(crate) fn new(side: &'static str, bounds: &[f64]) -> Counters {
        let bounds: Arc<[f64]> = bounds.into();
        Counters {
            side,
            received_frames: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_frames: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            socket_writes: AtomicU64::new(0),
            queued_bytes: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            state: AtomicI64::new(0),
            broadcasts: Histogram::new(&bounds),
            subscribes: AtomicU64::new(0),
            unsubscribes: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            unknown: Arc::new(RouteStats::new(&bounds)),
            routes: RwLock::new(BTreeMap::new()),
            requests: RwLock::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            slow_consumers: Mutex::new(BTreeMap::new()),
            rejected_handshakes: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            bounds,
        }
    }

    /// `server` or `client`.
    pub(crate) fn side(&self) -> &'static str {
        self.side
    }

    /// The stats of a route (created once, at build time).
    pub(crate) fn route(&self, type_name: &str, method: Option<&str>) -> Arc<RouteStats> {
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (type_name.to_owned(), method.map(str::to_owned));
        Arc::clone(
            routes
                .entry(key)
                .or_insert_with(|| Arc::new(RouteStats::new(&self.bounds))),
        )
    }

    /// The stats of everything that found no route (`type="unknown"`).
    pub(crate) fn unknown_route(&self) -> &RouteStats {
        &self.unknown
    }

    /// A frame of `bytes` was read from the socket.
    pub(crate) fn frame_received(&self, bytes: usize) {
        self.received_frames.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `frames` frames of `bytes` in all were flushed to the socket, in one write.
    pub(crate) fn flushed(&self, frames: u64, bytes: u64) {
        self.sent_frames.fetch_add(frames, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.socket_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Budget bytes queued (positive) or given back (negative) in outbound queues.
    pub(crate) fn queued(&self, delta: i64) {
        self.queued_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    /// A handler started.
    pub(crate) fn handler_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A handler ended, however.
    pub(crate) fn handler_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The lifecycle state: 0 new, 1 running, 2 closing, 3 closed.
    pub(crate) fn set_state(&self, value: i64) {
        self.state.store(value, Ordering::Relaxed);
    }

    /// A broadcast was queued for every connection in `took`.
    pub(crate) fn broadcast_took(&self, took: Duration) {
        self.broadcasts.observe(took);
    }

    pub(crate) fn subscribed(&self, added: bool) {
        let counter = if added {
            &self.subscribes
        } else {
            &self.unsubscribes
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn published(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// A request this side made was answered (or gave up) after `took`.
    pub(crate) fn request_took(&self, type_name: TypeName, method: &'static str, took: Duration) {
        let key = RequestLabels { type_name, method };
        // Observed under the read lock: callers on every thread share the
        // histogram, and a clone of a reference to it would be two more
        // locked instructions on a line they all write.
        if let Some(histogram) = self
            .requests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            histogram.observe(took);
            return;
        }
        self.requests
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| Histogram::new(&self.bounds))
            .observe(took);
    }

    pub(crate) fn error(&self, kind: &'static str) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    pub(crate) fn slow_consumer(&self, disconnected: bool) {
        let action = if disconnected { "disconnect" } else { "drop" };
        *lock(&self.slow_consumers).entry(action).or_default() += 1;
    }

    /// A client's pub/sub frame was refused; `action` is its kind.
    pub(crate) fn refused(&self, action: &'static str) {
        *lock(&self.refused).entry(action).or_default() += 1;
    }

    pub(crate) fn rejected_handshake(&self, status: u16) {
        *lock(&self.rejected_handshakes).entry(status).or_default() += 1;
    }

    /// Every value, for the exporter.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0);
        let mut routes: Vec<_> = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(key, s)| (key.clone(), load(&s.received), s.handler.snapshot()))
            .collect();
        routes.push((
            ("unknown".to_owned(), None),
            load(&self.unknown.received),
            self.unknown.handler.snapshot(),
        ));
        let requests = self
            .requests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(labels, h)| {
                let method = (!labels.method.is_empty()).then(|| labels.method.to_owned());
                ((labels.type_name.to_string(), method), h.snapshot())
            })
            .collect();
        Snapshot {
            side: self.side,
            counters: vec![
                (
                    "goomerang_received_frames",
                    "Frames received.",
                    load(&self.received_frames),
                ),
                (
                    "goomerang_received_bytes",
                    "Bytes of frames received.",
                    load(&self.received_bytes),
                ),
                (
                    "goomerang_sent_frames",
                    "Frames written to the socket.",
                    load(&self.sent_frames),
                ),
                (
                    "goomerang_sent_bytes",
                    "Bytes of frames written to the socket.",
                    load(&self.sent_bytes),
                ),
                (
                    "goomerang_socket_writes",
                    "Batches of frames written to the socket, one flush each (sent frames per write: how well writes batch).",
                    load(&self.socket_writes),
                ),
                (
                    "goomerang_subscribe",
                    "Subscriptions added.",
                    load(&self.subscribes),
                ),
                (
                    "goomerang_unsubscribe",
                    "Subscriptions removed.",
                    load(&self.unsubscribes),
                ),
                (
                    "goomerang_publish",
                    "Messages published.",
                    load(&self.publishes),
                ),
            ],
            gauges: vec![
                (
                    "goomerang_outbound_queue_bytes",
                    "Bytes waiting in outbound queues.",
                    gauge(&self.queued_bytes),
                ),
                (
                    "goomerang_handlers_in_flight",
                    "Handlers running now.",
                    gauge(&self.in_flight),
                ),
                (
                    "goomerang_connections",
                    "Open connections.",
                    gauge(&self.connections),
                ),
                (
                    "goomerang_state",
                    "Lifecycle state: 0 new, 1 running, 2 closing, 3 closed.",
                    gauge(&self.state),
                ),
            ],
            routes,
            requests,
            broadcasts: self.broadcasts.snapshot(),
            errors: lock(&self.errors).iter().map(|(k, n)| (*k, *n)).collect(),
            slow_consumers: lock(&self.slow_consumers)
                .iter()
                .map(|(k, n)| (*k, *n))
                .collect(),
            rejected_handshakes: lock(&self.rejected_handshakes)
                .iter()
                .map(|(k, n)| (*k, *n))
                .collect(),
            refused: lock(&self.refused).iter().map(|(k, n)| (*k, *n)).collect(),
        }
    }

    #[cfg(all(test, not(goomerang_shuttle)))]
    pub(crate) fn queued_bytes(&self) -> i64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

/// The labels of the requests a side makes: a type, and a method or `""`.
/// Compared by the strings' addresses first: a side's requests of one kind
/// name the same static strings, so finding their histogram compares no text.
#[derive(Clone, Copy, Debug)]
struct RequestLabels {
    type_name: TypeName,
    method: &'static str,
}

impl RequestLabels {
    fn same_statics(&self, other: &RequestLabels) -> bool {
        self.type_name.same_halves(&other.type_name) && std::ptr::eq(self.method, other.method)
    }
}

impl PartialEq for RequestLabels {
    fn eq(&self, other: &RequestLabels) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for RequestLabels {}

impl PartialOrd for RequestLabels {
    fn partial_cmp(&self, other: &RequestLabels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RequestLabels {
    fn cmp(&self, other: &RequestLabels) -> std::cmp::Ordering {
        if self.same_statics(other) {
            return std::cmp::Ordering::Equal;
        }
        (self.type_name, self.method).cmp(&(other.type_name, other.method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_each_bucket_and_the_overflow() {
        let h = Histogram::new(&Arc::from(&[0.001, 0.01][..]));
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(10));
        // A value on a bound counts in that bound's bucket (Prometheus `le`).
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(10));
        // One nanosecond above a bound is in the next bucket.
        h.observe(Duration::from_nanos(1_000_001));
        let snap = h.snapshot();
        assert_eq!(snap.count, 7);
        assert_eq!(snap.buckets, vec![(0.001, 2), (0.01, 4), (f64::MAX, 1)]);
        assert!((snap.sum - 10.020_030_001).abs() < 1e-9, "{}", snap.sum);
        // Every default bound, on it and just above it.
        let h = Histogram::new(&Arc::from(&DEFAULT_BUCKETS[..]));
        for bound in DEFAULT_BUCKETS {
            let on = Duration::from_secs_f64(bound);
            h.observe(on);
            h.observe(on + Duration::from_nanos(1));
        }
        let counts: Vec<u64> = h.snapshot().buckets.iter().map(|&(_, n)| n).collect();
        assert_eq!(counts, [[1].as_slice(), &[2; 11], &[1]].concat());
    }

    #[test]
    fn requests_of_one_route_share_a_histogram_whatever_copy_of_its_names_they_hold() {
        let counters = Counters::new("client", &DEFAULT_BUCKETS);
        let position = TypeName::of::<crate::wire::proto::Position>();
        let method = "test.v1.Echo/Twice";
        // The same text at another address, as a name built at run time is.
        let copy: &'static str = Box::leak(method.to_owned().into_boxed_str());
        assert!(!std::ptr::eq(method, copy));
        counters.request_took(position, method, Duration::from_micros(5));
        counters.request_took(position, copy, Duration::from_micros(5));
        counters.request_took(position, method, Duration::from_micros(5));
        counters.request_took(position, "", Duration::from_micros(5));
        counters.request_took(TypeName::NONE, method, Duration::from_micros(5));
        let mut counts: Vec<_> = counters
            .snapshot()
            .requests
            .into_iter()
            .map(|((name, method), h)| (name, method, h.count))
            .collect();
        counts.sort();
        let method = Some(method.to_owned());
        assert_eq!(
            counts,
            [
                (String::new(), method.clone(), 1),
                ("goomerang.v1.Position".to_owned(), None, 1),
                ("goomerang.v1.Position".to_owned(), method, 3),
            ]
        );
    }
}
