//! `Reconnect`: the client's policy for a lost connection — backoff with jitter, and what calls do meanwhile.

use std::time::Duration;

/// How a [`Client`](crate::Client) reconnects after losing its connection
/// (anything but its own `close`): exponential backoff with jitter, then its
/// topic subscriptions are renewed. On by default; turn off with
/// `ClientBuilder::reconnect(None)`.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a builder does nothing until it is used"]
pub struct Reconnect {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) while_disconnected: WhileDisconnected,
}

/// What `send`, `request` and `publish` do while the client is reconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhileDisconnected {
    /// Wait for the reconnection, up to the call's deadline (requests) or the
    /// request timeout (sends); then fail with UNAVAILABLE / `NotRunning`.
    Wait,
    /// Fail at once with UNAVAILABLE / `NotRunning`.
    FailFast,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
            while_disconnected: WhileDisconnected::Wait,
        }
    }
}

impl Reconnect {
    /// First delay (default 100 ms) and the cap (default 10 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max.max(initial);
        self
    }

    /// Growth per failed attempt (default 2.0, at least 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Random spread of each delay, as a fraction (default 0.2 = ±20%, at most 1.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Give up after this many failed attempts (default: never).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// What calls do while disconnected (default [`WhileDisconnected::Wait`]).
    pub fn while_disconnected(mut self, behaviour: WhileDisconnected) -> Self {
        self.while_disconnected = behaviour;
        self
    }

    /// The delay before attempt `attempt` (0-based), jittered by `random` in [0, 1).
    pub(crate) fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * random - 1.0);
        Duration::from_secs_f64((capped * spread).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let policy =
            Reconnect::default().backoff(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(policy.delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(policy.delay(1, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(3, 0.5), Duration::from_millis(800));
        assert_eq!(policy.delay(10, 0.5), Duration::from_secs(2));
        assert_eq!(policy.delay(0, 0.0), Duration::from_millis(80));
        assert!(policy.delay(0, 0.999_999) <= Duration::from_millis(120));
    }
}
