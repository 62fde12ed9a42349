//! Where an HTTP/1 message body ends (RFC 9112 §6), and the chunked-coding scanner that finds
//! the end of a chunked body while its bytes pass through unchanged (or, for an HTTP/1.0
//! client, with the chunk framing taken out).

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding: chunked, ending with the last chunk and trailers.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// The chunked body was not valid chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

/// Longest chunk-size line (size, extensions) and trailer section fulcrum accepts.
const MAX_LINE: u32 = 4096;
const MAX_TRAILERS: u32 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        digits: u8,
    },
    /// Whitespace after the size, before `;` or the line end.
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line (or the CRLF that ends the trailers).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Incremental chunked-coding scanner.
#[derive(Debug, Clone)]
pub struct ChunkScanner {
    state: State,
    /// Size of the chunk being read, or bytes of it still to come.
    remaining: u64,
    /// Bytes of the current size line or of all trailers, against the limits above.
    line: u32,
    trailers: u32,
    /// The current trailer's name so far, lower case; `name_len` past the buffer means longer
    /// than any forbidden name.
    name: [u8; NAME_BUFFER],
    name_len: usize,
}

/// Longer than every name in [`FORBIDDEN_TRAILERS`].
const NAME_BUFFER: usize = 20;

/// Fields that must not come as trailers (RFC 9110 §6.5.1): framing, routing, hop-by-hop,
/// authentication, request modifiers and content format — a backend that merges trailers
/// into the header section would read them after fulcrum decided framing, routing and
/// forwarding from the head. The forwarding headers are here for the same reason: a trailer
/// must not bring back the `X-Forwarded-For` that the head's rules replaced.
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"trailer",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"upgrade",
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"expect",
    b"range",
    b"max-forwards",
    b"cache-control",
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"if-range",
    b"content-type",
    b"content-encoding",
    b"content-range",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
];

/// What one call to [`ChunkScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Input bytes that belong to the body (the rest belongs to what follows it).
    pub consumed: usize,
    /// Bytes to pass on, at the front of the input (`consumed` when not decoding).
    pub output: usize,
    /// The last chunk and the trailers have been seen.
    pub done: bool,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        Self {
            state: State::Size { digits: 0 },
            remaining: 0,
            line: 0,
            trailers: 0,
            name: [0; NAME_BUFFER],
            name_len: 0,
        }
    }
}

impl ChunkScanner {
    /// Scans `input`. With `decode`, the chunk data is moved to the front of `input` and
    /// `output` counts it (framing and trailers dropped); without, every consumed byte is
    /// passed on as it is.
    pub fn scan(&mut self, input: &mut [u8], decode: bool) -> Result<Scanned, BadChunk> {
        let mut i = 0;
        let mut out = 0;
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = self.remaining.min((input.len() - i) as u64) as usize;
                if decode {
                    input.copy_within(i..i + take, out);
                    out += take;
                }
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(Scanned {
            consumed: i,
            output: if decode { out } else { i },
            done: self.state == State::Done,
        })
    }

    /// One byte of framing. Every line ends in CRLF: a bare LF is refused wherever it
    /// appears (sizes, extensions, trailers), since fulcrum relays the framing as it came and
    /// a backend that takes a bare LF for a line end would read different boundaries.
    fn step(&mut self, byte: u8) -> Result<(), BadChunk> {
        self.state = match self.state {
            State::Size { digits } => {
                self.count_line()?;
                match (byte as char).to_digit(16) {
                    Some(d) if digits < 16 => {
                        self.remaining = (self.remaining << 4) | u64::from(d);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits > 0 && byte == b';' => State::Extension,
                    None if digits > 0 && (byte == b' ' || byte == b'\t') => State::SizeWhitespace,
                    None if digits > 0 && byte == b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                }
            }
            State::SizeWhitespace => {
                self.count_line()?;
                match byte {
                    b' ' | b'\t' => State::SizeWhitespace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                }
            }
            State::Extension => {
                self.count_line()?;
                match byte {
                    b'\r' => State::SizeLf,
                    // No control characters reach a backend inside an extension.
                    b if is_control(b) => return Err(BadChunk),
                    _ => State::Extension,
                }
            }
            State::SizeLf if byte == b'\n' => {
                self.line = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size { digits: 0 },
            State::TrailerStart if byte == b'\r' => State::EndLf,
            // A trailer is `token ":" value` (RFC 9112 §7.1.2 and §5): no whitespace before
            // the colon, no obs-fold (a line starting with whitespace), no empty name.
            State::TrailerStart | State::TrailerName => {
                self.count_trailer()?;
                if self.state == State::TrailerStart {
                    self.name_len = 0;
                }
                match byte {
                    b':' if self.state == State::TrailerName => {
                        if self.forbidden_name() {
                            return Err(BadChunk);
                        }
                        State::TrailerValue
                    }
                    b if is_token(b) => {
                        if let Some(slot) = self.name.get_mut(self.name_len) {
                            *slot = b.to_ascii_lowercase();
                        }
                        self.name_len = self.name_len.saturating_add(1);
                        State::TrailerName
                    }
                    _ => return Err(BadChunk),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::TrailerLf,
                    b if is_control(b) => return Err(BadChunk),
                    _ => State::TrailerValue,
                }
            }
            State::TrailerLf if byte == b'\n' => {
                self.count_trailer()?;
                State::TrailerStart
            }
            State::EndLf if byte == b'\n' => State::Done,
            _ => return Err(BadChunk),
        };
        Ok(())
    }

    /// The trailer name just read is one [`FORBIDDEN_TRAILERS`] lists.
    fn forbidden_name(&self) -> bool {
        self.name
            .get(..self.name_len)
            .is_some_and(|name| FORBIDDEN_TRAILERS.contains(&name))
    }

    fn count_trailer(&mut self) -> Result<(), BadChunk> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(BadChunk);
        }
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), BadChunk> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(BadChunk);
        }
        Ok(())
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A control character other than horizontal tab (CR and LF included: callers match the
/// line end before asking).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(pieces: &[&[u8]], decode: bool) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut scanner = ChunkScanner::default();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut bytes = piece.to_vec();
            let s = scanner.scan(&mut bytes, decode)?;
            out.extend_from_slice(&bytes[..s.output]);
            consumed += s.consumed;
            if s.done {
                return Ok((out, consumed, true));
            }
        }
        Ok((out, consumed, false))
    }

    #[test]
    fn chunked_bodies_end_where_the_coding_says_in_any_split() {
        let body = b"5\r\nhello\r\n6 ;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\nx-b: 2\r\n\r\nNEXT";
        let body_len = body.len() - 4;
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            let (raw, consumed, done) = scan_all(&[a, b], false).unwrap();
            assert!(done);
            assert_eq!(consumed, body_len, "split at {split}");
            assert_eq!(raw, &body[..body_len]);
            let (decoded, _, done) = scan_all(&[a, b], true).unwrap();
            assert!(done);
            assert_eq!(decoded, b"hello world", "split at {split}");
        }
    }

    #[test]
    fn malformed_chunked_coding_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"0\r\n\r\r",
            // Bare LF ending a size line, an extension, a trailer, or the trailers.
            b"5;a=b\nhello\r\n",
            b"0\r\nx-trailer: 1\n\r\n",
            b"0\r\nx-trailer: 1\r\n\n",
            b"0\r\n\n",
            // Control characters in extensions and trailers, and junk after the size.
            b"5;a=\x00\r\nhello\r\n",
            b"5;a=\x1b[0m\r\nhello\r\n",
            b"0\r\nx-t: \x7f\r\n\r\n",
            b"5 x\r\nhello\r\n",
            // Trailers: not `token: value`, or a field that must not be a trailer.
            b"0\r\nno-colon\r\n\r\n",
            b"0\r\n: empty-name\r\n\r\n",
            b"0\r\nx y: 1\r\n\r\n",
            b"0\r\nx-a : 1\r\n\r\n",
            b"0\r\nx-a: 1\r\n folded\r\n\r\n",
            b"0\r\nContent-Length: 5\r\n\r\n",
            b"0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"0\r\nHost: b\r\n\r\n",
            b"0\r\nx-forwarded-for: 10.0.0.1\r\n\r\n",
        ] {
            assert_eq!(scan_all(&[bad], false), Err(BadChunk), "{bad:?}");
        }
    }

    #[test]
    fn allowed_trailers_pass_whatever_their_length_and_case() {
        for good in [
            &b"0\r\nx-checksum: abc\r\n\r\n"[..],
            b"0\r\ngrpc-status: 0\r\nGrpc-Message: ok\r\n\r\n",
            b"0\r\nx-a-very-long-trailer-name-indeed: 1\r\n\r\n",
            b"0\r\nx-empty:\r\n\r\n",
            b"0\r\nhosts: 1\r\n\r\n",
        ] {
            let (_, consumed, done) =
                scan_all(&[good], false).unwrap_or_else(|e| panic!("{good:?}: {e:?}"));
            assert!(done && consumed == good.len(), "{good:?}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (_, consumed, done) = scan_all(&[b"5\r\nhel"], false).unwrap();
        assert_eq!((consumed, done), (6, false));
    }
}
