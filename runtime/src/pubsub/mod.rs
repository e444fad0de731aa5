//! Broadcast and topic pub/sub beyond the `Server`/`Client` methods:
//! subscriptions, topic limits, the slow-consumer close code, and the
//! [`Backplane`] that carries fan-out between replicas.

pub(crate) mod access;
pub(crate) mod backplane;
pub(crate) mod control;
pub(crate) mod hub;
pub(crate) mod topics;
pub use crate::wire::control::{Control, ControlKind};
pub use crate::wire::topic::{MAX_TOPIC_LEN, Subscription, TopicError};
pub use backplane::{Backplane, Event, Inbound, LocalOnly};
pub use hub::CLOSE_SLOW_CONSUMER;
