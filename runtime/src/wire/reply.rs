//! What answers a request, before it is framed: an encoded reply (type, payload, headers) or a status.

use bytes::Bytes;

use crate::wire::frame;
use crate::wire::message::{Headers, Payload, TypeName};
use crate::wire::status::Status;

/// What a handler (or a middleware short-circuiting it) produced: a reply to
/// send, nothing (one-way handlers), or a status error.
pub type Outcome = Result<Option<Encoded>, Status>;

/// An encoded reply payload with its type name and headers.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub(crate) type_name: TypeName,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
}

impl Encoded {
    /// Encodes a reply message (small ones share a chunk with other
    /// encodings on this thread, one allocation for many).
    pub fn new<T: Payload>(message: &T) -> Encoded {
        Encoded {
            type_name: TypeName::of::<T>(),
            payload: frame::with_buffer(message.encoded_len(), |buf| message.encode_raw(buf)),
            headers: Headers::new(),
        }
    }

    /// The reply to a SUBSCRIBE of a topic with history: where it stands.
    pub(crate) fn position(epoch: String, offset: u64, recovered: bool) -> Encoded {
        Encoded::new(&crate::wire::proto::Position {
            epoch,
            offset,
            recovered,
        })
    }

    /// The empty reply acknowledging a control frame.
    pub(crate) fn ack() -> Encoded {
        Encoded {
            type_name: TypeName::NONE,
            payload: Bytes::new(),
            headers: Headers::new(),
        }
    }

    /// The reply's full protobuf type name (built on each call: the runtime
    /// writes it to the wire from its static halves and never needs it whole).
    pub fn type_name(&self) -> String {
        self.type_name.to_string()
    }

    /// The encoded reply payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The reply's headers; middleware may add to them (e.g. tracing context).
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}
