//! Observation: the Prometheus metrics every layer counts into.

pub(crate) mod metrics;
