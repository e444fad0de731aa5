//! Observation: Prometheus metrics and the user's hooks.

pub(crate) mod hooks;
pub(crate) mod metrics;
