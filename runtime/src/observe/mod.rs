//! Observation: the counters every layer feeds, and their export to Prometheus.

#[cfg(feature = "metrics")]
pub(crate) mod export;
pub(crate) mod metrics;
