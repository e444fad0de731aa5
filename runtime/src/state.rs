//! `State`: the NEW → RUNNING → CLOSING → CLOSED lifecycle of a server or client.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where a server or client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Built, never started.
    New,
    /// Serving (server) or connected (client).
    Running,
    /// Shutting down: no new work is accepted, work in flight is finishing.
    Closing,
    /// Stopped. A client may connect again; a server cannot be restarted.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::New => "NEW",
            State::Running => "RUNNING",
            State::Closing => "CLOSING",
            State::Closed => "CLOSED",
        })
    }
}

/// An atomically updated [`State`].
#[derive(Debug)]
pub(crate) struct StateCell(AtomicU8);

impl StateCell {
    pub(crate) fn new() -> Self {
        StateCell(AtomicU8::new(0))
    }

    pub(crate) fn get(&self) -> State {
        decode(self.0.load(Ordering::Acquire))
    }

    /// Moves from `from` to `to`; on failure returns the state found instead.
    pub(crate) fn transition(&self, from: State, to: State) -> Result<(), State> {
        self.0
            .compare_exchange(
                encode(from),
                encode(to),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(drop)
            .map_err(decode)
    }

    pub(crate) fn set(&self, to: State) {
        self.0.store(encode(to), Ordering::Release);
    }
}

fn encode(state: State) -> u8 {
    match state {
        State::New => 0,
        State::Running => 1,
        State::Closing => 2,
        State::Closed => 3,
    }
}

fn decode(value: u8) -> State {
    match value {
        0 => State::New,
        1 => State::Running,
        2 => State::Closing,
        _ => State::Closed,
    }
}
