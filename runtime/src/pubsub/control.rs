//! The server's side of the client-to-server control frames: BROADCAST, SUBSCRIBE, UNSUBSCRIBE and PUBLISH.

use std::sync::Arc;

use bytes::Bytes;

use crate::conn::connection::Connection;
use crate::error::Error;
use crate::hooks::Hooks;
use crate::incident::Incident;
use crate::pubsub::hub::Hub;
use crate::route::middleware::Middleware;
use crate::wire::control::{Control, ControlKind};
use crate::wire::frame::{self, Incoming};
use crate::wire::proto::{Frame, FrameKind};
use crate::wire::reply::Encoded;
use crate::wire::status::Status;
use crate::wire::topic::{self, Position, Subscription};

/// What is left of a control frame after [`handle`].
pub(crate) enum Step {
    /// Done: the reply's payload when it is not the empty acknowledgement.
    Done(Option<Encoded>),
    /// A SUBSCRIBE, admitted and checked: [`subscribe`] it.
    Subscribe {
        sub: Subscription,
        from: Option<Position>,
    },
}

/// Server side of BROADCAST, SUBSCRIBE, UNSUBSCRIBE and PUBLISH from a client.
/// Relayed payloads are re-framed as MESSAGE without being decoded. A
/// SUBSCRIBE may wait (for a topic's history from a broker): it is left to
/// [`subscribe`], so the reader's state carries that wait only when boxed.
pub(crate) fn handle(
    conn: &Connection,
    hub: &Hub,
    middleware: &[Arc<dyn Middleware>],
    hooks: &Hooks,
    kind: FrameKind,
    frame: Incoming,
) -> Result<Step, Status> {
    let control_kind = match kind {
        FrameKind::Subscribe => ControlKind::Subscribe,
        FrameKind::Unsubscribe => ControlKind::Unsubscribe,
        FrameKind::Publish => ControlKind::Publish,
        _ => ControlKind::Broadcast,
    };
    let control = Control {
        kind: control_kind,
        topic: &frame.topic,
        group: (!frame.queue_group.is_empty()).then_some(frame.queue_group.as_str()),
        type_name: &frame.type_name,
    };
    // The global middleware first (a rate limit counts the frame), then the policies.
    let admitted = middleware
        .iter()
        .try_for_each(|mw| mw.control(conn, &control))
        .and_then(|()| {
            hub.access()
                .check(conn, &control)
                .map_err(Status::permission_denied)
        });
    if let Err(status) = admitted {
        hooks.refused(control_kind.as_str());
        return Err(status);
    }
    let invalid = |detail: topic::TopicError| {
        let status = Status::invalid_argument(Error::InvalidTopic(detail.clone()).to_string());
        let err = Incident::InvalidTopic(detail);
        hooks.error(&err, Some(conn));
        status
    };
    match kind {
        FrameKind::Subscribe | FrameKind::Unsubscribe => {
            topic::validate(&frame.topic, true).map_err(invalid)?;
            let from = (kind == FrameKind::Subscribe
                && (frame.offset != 0 || !frame.epoch.is_empty()))
            .then(|| Position::new(frame.epoch, frame.offset));
            let sub = Subscription {
                pattern: frame.topic,
                group: (!frame.queue_group.is_empty()).then_some(frame.queue_group),
            };
            if kind == FrameKind::Unsubscribe {
                if hub.unsubscribe(conn, &sub) {
                    hooks.subscribe(conn, &sub, false);
                }
                return Ok(Step::Done(None));
            }
            if from.is_some() && (sub.group.is_some() || topic::has_wildcards(&sub.pattern)) {
                return Err(Status::invalid_argument(
                    "recovery needs a topic without wildcards, outside any queue group",
                ));
            }
            Ok(Step::Subscribe { sub, from })
        }
        FrameKind::Publish => {
            topic::validate(&frame.topic, false).map_err(invalid)?;
            let topic = frame.topic.clone();
            let type_name = frame.type_name.clone();
            let reached = hub.publish(&topic, relay(frame, true));
            hooks.publish(&topic, &type_name, reached);
            Ok(Step::Done(None))
        }
        _ => {
            let type_name = frame.type_name.clone();
            let reached = hub.broadcast(relay(frame, false), None);
            hooks.broadcast(&type_name, reached);
            Ok(Step::Done(None))
        }
    }
}

/// Subscribes as [`Step::Subscribe`] says; for a topic with history the
/// reply says where it stands (and whether `from` was recovered).
pub(crate) async fn subscribe(
    conn: &Connection,
    hub: &Hub,
    hooks: &Hooks,
    sub: Subscription,
    from: Option<Position>,
) -> Result<Option<Encoded>, Status> {
    let (added, recovery) = hub
        .subscribe_at(conn, &sub, from.as_ref())
        .await
        .map_err(Status::from)?;
    if added {
        hooks.subscribe(conn, &sub, true);
    }
    Ok(recovery.map(|r| Encoded::position(r.position.epoch, r.position.offset, r.recovered)))
}

/// Re-frames a client's BROADCAST or PUBLISH as the MESSAGE its recipients get.
fn relay(frame: Incoming, keep_topic: bool) -> Bytes {
    frame::encode(&Frame {
        kind: FrameKind::Message as i32,
        r#type: frame.type_name.to_string(),
        payload: frame.payload,
        headers: frame.headers,
        topic: if keep_topic {
            frame.topic
        } else {
            String::new()
        },
        created_unix_us: frame.created_unix_us,
        ..Frame::default()
    })
}
