//! `Access`: the server's policies for what clients may ask of pub/sub; client broadcast is off unless allowed.

use std::fmt;
use std::sync::Arc;

use crate::conn::connection::Connection;
use crate::wire::control::{Control, ControlKind};
use crate::wire::topic::Subscription;

type SubscribePolicy = Arc<dyn Fn(&Connection, &Subscription) -> bool + Send + Sync>;
type PublishPolicy = Arc<dyn Fn(&Connection, &str) -> bool + Send + Sync>;
type BroadcastPolicy = Arc<dyn Fn(&Connection) -> bool + Send + Sync>;

/// Who may subscribe, publish and broadcast. Without a policy, any client may
/// subscribe and publish, and no client may broadcast.
#[derive(Clone, Default)]
pub(crate) struct Access {
    subscribe: Option<SubscribePolicy>,
    publish: Option<PublishPolicy>,
    broadcast: Option<BroadcastPolicy>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("subscribe", &self.subscribe.is_some())
            .field("publish", &self.publish.is_some())
            .field("broadcast", &self.broadcast.is_some())
            .finish()
    }
}

impl Access {
    pub(crate) fn set_subscribe(&mut self, policy: SubscribePolicy) {
        self.subscribe = Some(policy);
    }

    pub(crate) fn set_publish(&mut self, policy: PublishPolicy) {
        self.publish = Some(policy);
    }

    pub(crate) fn set_broadcast(&mut self, policy: BroadcastPolicy) {
        self.broadcast = Some(policy);
    }

    /// Whether `conn` may do what `control` asks; `Err` says why not.
    pub(crate) fn check(&self, conn: &Connection, control: &Control<'_>) -> Result<(), String> {
        let allowed = match control.kind {
            ControlKind::Subscribe => self.subscribe.as_ref().is_none_or(|policy| {
                policy(
                    conn,
                    &Subscription {
                        pattern: control.topic.to_owned(),
                        group: control.group.map(str::to_owned),
                    },
                )
            }),
            // Removing one's own subscription needs no permission.
            ControlKind::Unsubscribe => true,
            ControlKind::Publish => self
                .publish
                .as_ref()
                .is_none_or(|policy| policy(conn, control.topic)),
            ControlKind::Broadcast => {
                return match &self.broadcast {
                    Some(policy) if policy(conn) => Ok(()),
                    Some(_) => Err("this connection may not broadcast".to_owned()),
                    None => Err(
                        "client broadcast is off on this server (ServerBuilder::allow_client_broadcast turns it on)"
                            .to_owned(),
                    ),
                };
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "this connection may not {} {:?}",
                control.kind.as_str(),
                control.topic
            ))
        }
    }
}
