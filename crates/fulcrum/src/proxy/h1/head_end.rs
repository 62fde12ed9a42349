//! Where a head being read could end. A head that trickles in a few bytes per read is
//! parsed again only when the bytes that just arrived could finish it, and each byte is
//! looked at once here: re-parsing from byte 0 on every read would be quadratic in the
//! head's size (up to the head limit) for a client that sends one byte at a time.

/// What a reader has learned about the head at the front of its buffer so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadEnd {
    /// Bytes of the buffer already looked at.
    searched: usize,
    /// A line end has been seen: the first line is complete.
    line_ended: bool,
    /// The buffer has been parsed once already.
    tried: bool,
}

impl HeadEnd {
    /// Looks at the bytes of `buffer` that arrived since the last call; true when a head
    /// may end within them (a line end followed by an empty line, CRLF or bare LF).
    pub fn may_be_complete(&mut self, buffer: &[u8]) -> bool {
        // Two bytes of overlap: "\n" + "\r\n" may straddle the last read's end.
        let from = self.searched.saturating_sub(2).min(buffer.len());
        self.searched = buffer.len();
        let fresh = &buffer[from..];
        if !self.line_ended && fresh.contains(&b'\n') {
            self.line_ended = true;
        }
        fresh.iter().enumerate().any(|(i, &b)| {
            b == b'\n' && matches!(&fresh[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..])
        })
    }

    /// Whether to parse `buffer` now: at once the first time it holds anything (a head
    /// usually arrives whole, and scanning it first would look at every byte twice on the
    /// hot path), afterwards only when [`Self::may_be_complete`] says so. The bytes skipped by
    /// the first parse are scanned by the next call.
    pub fn worth_parsing(&mut self, buffer: &[u8]) -> bool {
        if !self.tried && !buffer.is_empty() {
            self.tried = true;
            return true;
        }
        self.may_be_complete(buffer)
    }

    /// True once the first line (request or status line) is complete.
    pub fn line_ended(&self) -> bool {
        self.line_ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_may_end_only_once_an_empty_line_arrives_in_any_split() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        for split in 1..head.len() {
            let mut end = HeadEnd::default();
            let first = end.may_be_complete(&head[..split]);
            let second = end.may_be_complete(head);
            assert!(first || second, "split at {split}");
            assert!(!first || split == head.len(), "split at {split}");
        }
        let mut end = HeadEnd::default();
        assert!(
            end.may_be_complete(b"GET / HTTP/1.1\nhost: a\n\n"),
            "bare LF"
        );
    }

    #[test]
    fn the_first_bytes_are_parsed_at_once_and_later_ones_only_when_they_may_end_a_head() {
        let head = b"GET / HTTP/1.1\r\nx: 1\r\n\r\n";
        let mut end = HeadEnd::default();
        assert!(!end.worth_parsing(b""), "nothing to parse yet");
        assert!(end.worth_parsing(&head[..5]), "first bytes: parse at once");
        assert!(!end.worth_parsing(&head[..20]), "no empty line yet");
        assert!(end.line_ended(), "the skipped first bytes were scanned too");
        assert!(end.worth_parsing(head));
    }

    #[test]
    fn byte_by_byte_a_head_is_found_exactly_when_it_ends() {
        let head = b"GET / HTTP/1.1\r\nx: 1\r\n\r\n";
        let mut end = HeadEnd::default();
        for n in 1..=head.len() {
            assert_eq!(end.may_be_complete(&head[..n]), n == head.len(), "at {n}");
            assert_eq!(end.line_ended(), n >= 16, "at {n}");
        }
    }
}
