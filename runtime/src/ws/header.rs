//! One WebSocket frame header (RFC 6455 §5.2): parsed from received bytes, written before sent payloads, and the masking both sides apply.

use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::ProtocolError;

/// The longest header: 2 bytes, an 8-byte length, a 4-byte mask.
pub(crate) const MAX_LEN: usize = 14;

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1–3, in the low three bits.
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    /// Payload length.
    pub(crate) len: u64,
}

impl Header {
    /// Parses the header at the start of `buf`: the header and its length in
    /// bytes, or `None` if `buf` does not hold all of it yet. A reserved
    /// opcode (data 3–7, control 11–15) is refused here, as soon as it is seen.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        let opcode = first & 0x0F;
        let (len, mut at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().expect("eight bytes")), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let mask = if second & 0x80 != 0 {
            let Some(b) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        if matches!(opcode, 3..=7 | 11..=15) {
            return Err(Error::Protocol(ProtocolError::InvalidOpcode(opcode)));
        }
        let header = Header {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0x7,
            opcode,
            mask,
            len,
        };
        Ok(Some((header, at)))
    }

    /// Whether this is a control frame (close, ping, pong).
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Appends the header of a final, unfragmented frame of `opcode` carrying
/// `len` payload bytes, masked with `mask` if given (the shortest length
/// encoding, as RFC 6455 asks).
pub(crate) fn put(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// XORs `data` with `mask`, repeated from its first byte (masking and
/// unmasking are the same operation). Eight bytes at a time.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(opcode: u8, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, opcode, len, mask);
        out
    }

    #[test]
    fn headers_round_trip_in_each_length_form() {
        for (len, size) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let bytes = written(BINARY, len, mask);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(bytes.len(), size + extra, "len {len}");
                let parsed = Header::parse(&bytes).expect("valid").expect("complete");
                let want = Header {
                    fin: true,
                    rsv: 0,
                    opcode: BINARY,
                    mask,
                    len: len as u64,
                };
                assert_eq!(parsed, (want, bytes.len()));
                // Any shorter prefix is incomplete, not an error.
                for cut in 0..bytes.len() {
                    assert_eq!(Header::parse(&bytes[..cut]).expect("valid"), None);
                }
            }
        }
    }

    #[test]
    fn reserved_opcodes_are_refused_and_rsv_bits_are_kept() {
        for opcode in (3..=7).chain(11..=15) {
            let err = Header::parse(&[0x80 | opcode, 0]).expect_err("reserved");
            assert_eq!(
                err.to_string(),
                format!("WebSocket protocol error: Encountered invalid opcode: {opcode}")
            );
        }
        let (header, _) = Header::parse(&[0x80 | 0x50 | BINARY, 0])
            .expect("ok")
            .expect("all");
        assert_eq!(header.rsv, 0b101);
        assert!(!Header::parse(&[BINARY, 0]).expect("ok").expect("all").0.fin);
    }

    #[test]
    fn masking_twice_restores_every_length() {
        let mask = [0xA1, 0x02, 0xF3, 0x44];
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, mask);
            let expected: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(data, expected, "len {len}");
            apply_mask(&mut data, mask);
            assert_eq!(data, original);
        }
    }
}
