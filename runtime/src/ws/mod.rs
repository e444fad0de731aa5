//! WebSocket framing after the handshake (RFC 6455 §5): goomerang's own reader and writer over any byte stream.
//!
//! The opening handshake stays with hyper (server) and tungstenite (client);
//! once it is done, the connection's bytes go through [`WsRead`] and
//! [`WsWrite`]. They speak tungstenite's `Message` and `Error` types, so
//! every error reads as before, but frame headers, masking and buffering are
//! goomerang's: a received frame costs a header parse and a slice of the
//! read buffer, and the read buffer exists only while data streams in.

pub(crate) mod handshake;
pub(crate) mod header;
pub(crate) mod io;
pub(crate) mod read;
pub(crate) mod write;

use bytes::BytesMut;

use io::{Io, ReadSide, WriteSide};

pub(crate) use read::WsRead;
pub(crate) use write::WsWrite;

/// Which end of the connection this is: a client masks what it sends, a
/// server requires masked frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// What the reader accepts and how it buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest message (all its fragments), in bytes.
    pub(crate) max_message: usize,
    /// The read buffer's size while no data streams in.
    pub(crate) read_buffer: usize,
}

/// An upgraded connection: the byte stream, what was read past the
/// handshake, and which end this is.
pub(crate) struct Upgraded {
    pub(crate) io: Io,
    pub(crate) leftover: BytesMut,
    pub(crate) role: Role,
}

impl Upgraded {
    /// Its read and write halves.
    pub(crate) fn split(self, limits: Limits) -> (WsRead<ReadSide>, WsWrite<WriteSide>) {
        let (read, write) = io::split(self.io);
        (
            WsRead::new(read, self.leftover, self.role, limits),
            WsWrite::new(write, self.role),
        )
    }
}
