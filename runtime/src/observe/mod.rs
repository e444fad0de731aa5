//! Observation: the counters every layer feeds, and their export to Prometheus.

pub(crate) mod backplane;
#[cfg(feature = "metrics")]
pub(crate) mod export;
pub(crate) mod metrics;
