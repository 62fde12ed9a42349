//! WebSocket frames as a proxy that only relays them needs to know them (RFC 6455 §5.2):
//! where each frame of a byte stream ends — so a close frame can be put between two frames,
//! never inside one — and the close frame itself. Payloads are never looked at: no
//! unmasking, no inflating, no copying. Also when a drain tells WebSockets to go away.

use std::time::Duration;

/// Where a byte stream of WebSocket frames is: inside a frame's header, inside its payload,
/// or between two frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameCursor {
    /// The header bytes of the frame being read (2 to 14 of them).
    header: [u8; 14],
    have: usize,
    /// Payload bytes still to come in the current frame.
    remaining: u64,
}

impl FrameCursor {
    /// Between two frames (or before the first): a frame may be put here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Reads `bytes` up to the end of the next frame that ends in them: `(consumed, true)`
    /// when one does (the first `consumed` bytes close it), `(bytes.len(), false)` when none
    /// does. At a boundary the next frame starts with the first byte.
    pub fn until_boundary(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < bytes.len() {
            if self.remaining > 0 {
                let left = (bytes.len() - i) as u64;
                let take = self.remaining.min(left);
                self.remaining -= take;
                i += take as usize;
                if self.remaining == 0 {
                    return (i, true);
                }
                continue;
            }
            self.header[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if let Some(length) = self.payload_length() {
                self.have = 0;
                self.remaining = length;
                if length == 0 {
                    return (i, true);
                }
            }
        }
        (i, false)
    }

    /// Reads all of `bytes`.
    pub fn skip(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            i += self.until_boundary(&bytes[i..]).0;
        }
    }

    /// The payload length once the header is complete.
    fn payload_length(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let (extended, length) = match self.header[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let size = 2 + extended + if masked { 4 } else { 0 };
        if self.have < size {
            return None;
        }
        Some(length.unwrap_or_else(|| {
            self.header[2..2 + extended]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        }))
    }
}

/// Close code 1001: the endpoint is going away (RFC 6455 §7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// A close frame from the server's side (unmasked), with `code` and a short `reason`
/// (control frames carry at most 125 bytes: a longer reason is cut).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88); // FIN, opcode close
    frame.push(2 + reason.len() as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// How long before a drain's deadline its WebSockets are told to go away: half the drain's
/// timeout, at most 5 s. Long enough for a client to close and reconnect elsewhere before the
/// deadline closes what is left; short enough to let the socket work for most of the drain.
pub fn going_away_lead(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_secs(5))
}

/// Whether a drain with `timeout` ending at `deadline` tells its WebSockets to go away at
/// `now`.
pub fn going_away_due(now: Duration, deadline: Duration, timeout: Duration) -> bool {
    now.saturating_add(going_away_lead(timeout)) >= deadline
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame with `payload` (masked as a client's are when `masked`).
    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let mask = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask | n as u8),
            n if n <= 0xffff => {
                out.push(mask | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend_from_slice(payload);
        out
    }

    /// The offsets where frames end in `stream`, as the cursor finds them fed in `pieces`.
    fn boundaries(stream: &[u8], pieces: &[usize]) -> Vec<usize> {
        let mut cursor = FrameCursor::default();
        let mut found = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = pieces.iter().map(|p| p % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        for end in cuts {
            while at < end {
                let (used, reached) = cursor.until_boundary(&stream[at..end]);
                at += used;
                if reached {
                    found.push(at);
                }
            }
        }
        found
    }

    #[test]
    fn frame_ends_are_found_for_every_length_encoding() {
        let small = frame(0x1, b"hi", false);
        let medium = frame(0x2, &[7; 300], false);
        let large = frame(0x2, &[9; 70_000], true);
        let empty = frame(0x9, b"", false);
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for f in [&small, &medium, &large, &empty, &small] {
            stream.extend_from_slice(f);
            ends.push(stream.len());
        }
        assert_eq!(boundaries(&stream, &[]), ends);
        // Fed a byte at a time, the same ends.
        let mut cursor = FrameCursor::default();
        let mut found = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            if cursor.until_boundary(std::slice::from_ref(b)).1 {
                found.push(i + 1);
            }
        }
        assert_eq!(found, ends);
        assert!(cursor.at_boundary());
    }

    proptest! {
        #[test]
        fn frame_ends_do_not_depend_on_how_the_stream_is_cut(
            sizes in proptest::collection::vec(0usize..70_000, 1..6),
            masked in any::<bool>(),
            pieces in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                stream.extend_from_slice(&frame(0x2, &vec![i as u8; *size], masked));
                ends.push(stream.len());
            }
            prop_assert_eq!(boundaries(&stream, &pieces), ends);
        }
    }

    #[test]
    fn the_close_frame_is_a_valid_unmasked_control_frame() {
        let close = close_frame(GOING_AWAY, "draining");
        assert_eq!(&close[..4], &[0x88, 10, 0x03, 0xe9]);
        assert_eq!(&close[4..], b"draining");
        let long = close_frame(GOING_AWAY, &"x".repeat(300));
        assert_eq!(
            long.len(),
            2 + 125,
            "a control frame carries at most 125 bytes"
        );
        let mut cursor = FrameCursor::default();
        assert_eq!(cursor.until_boundary(&close), (close.len(), true));
    }

    #[test]
    fn websockets_are_told_to_go_away_before_the_drain_deadline() {
        let s = Duration::from_secs;
        assert_eq!(going_away_lead(s(30)), s(5));
        assert_eq!(going_away_lead(s(4)), s(2));
        // A 30 s drain started at 100 s: told at 125 s, not before.
        assert!(!going_away_due(
            Duration::from_millis(124_999),
            s(130),
            s(30)
        ));
        assert!(going_away_due(s(125), s(130), s(30)));
        assert!(going_away_due(s(131), s(130), s(30)));
    }
}
