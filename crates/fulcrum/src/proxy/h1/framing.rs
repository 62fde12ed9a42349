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
    TrailerStart,
    TrailerLine,
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
}

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
            State::TrailerStart | State::TrailerLine => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::TrailerLf,
                    b if is_control(b) => return Err(BadChunk),
                    _ => State::TrailerLine,
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
        ] {
            assert_eq!(scan_all(&[bad], false), Err(BadChunk), "{bad:?}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (_, consumed, done) = scan_all(&[b"5\r\nhel"], false).unwrap();
        assert_eq!((consumed, done), (6, false));
    }
}
