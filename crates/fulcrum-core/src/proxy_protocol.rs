//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy in front sends before
//! a connection's own bytes to say which client the connection is for. Parsed on listeners
//! that accept it, written to backends of pools that ask for it. Pure: bytes in, bytes out;
//! the caller reads exactly the header's length off the socket, so nothing after it is lost.
//!
//! Written by hand: the format is two small fixed layouts, and no maintained crate parses
//! both versions incrementally without owning the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The longest version 2 header fulcrum accepts (16 fixed bytes, addresses and TLVs): the
/// specification allows 64 KiB, load balancers in use send well under 1 KiB.
pub const V2_MAX: usize = 16 + 2048;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is for this client, who connected to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender's own connection (a health check: v2 `LOCAL`, v1 `UNKNOWN`, or an address
    /// family other than TCP over IPv4/IPv6): the socket's addresses stand.
    Local,
}

/// How far a buffer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole header yet; more bytes may make it one.
    Incomplete,
    /// A header of `len` bytes at the start of the buffer.
    Complete { header: Header, len: usize },
}

/// Not a valid PROXY header; the reason, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Parses the PROXY header at the start of `buffer`.
pub fn parse(buffer: &[u8]) -> Result<Parsed, Invalid> {
    const V1_START: &[u8] = b"PROXY ";
    if buffer.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(buffer) {
        return Ok(Parsed::Incomplete);
    }
    if buffer.starts_with(&V2_SIGNATURE) {
        return parse_v2(buffer);
    }
    if buffer.len() < V1_START.len() && V1_START.starts_with(buffer) {
        return Ok(Parsed::Incomplete);
    }
    if buffer.starts_with(V1_START) {
        return parse_v1(buffer);
    }
    Err(Invalid("no PROXY protocol header"))
}

fn parse_v1(buffer: &[u8]) -> Result<Parsed, Invalid> {
    let window = &buffer[..buffer.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buffer.len() >= V1_MAX {
            Err(Invalid("PROXY v1 header longer than 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    match window.get(cr..cr + 2) {
        Some(b"\r\n") => {}
        None if window[cr] == b'\r' && cr + 1 == buffer.len() => return Ok(Parsed::Incomplete),
        _ => return Err(Invalid("PROXY v1 header not ended by CRLF")),
    }
    let len = cr + 2;
    let line =
        std::str::from_utf8(&window[..cr]).map_err(|_| Invalid("PROXY v1 header is not ASCII"))?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let family = parts.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (§2.1).
        return Ok(Parsed::Complete {
            header: Header::Local,
            len,
        });
    }
    let fields: Vec<&str> = parts.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(Invalid("PROXY v1 header needs two addresses and two ports"));
    };
    let ip = |text: &str| -> Result<IpAddr, Invalid> {
        match family {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => text.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(Invalid("PROXY v1 family is not TCP4, TCP6 or UNKNOWN")),
        }
        .map_err(|_| Invalid("PROXY v1 address does not match its family"))
    };
    let header = Header::Proxied {
        source: SocketAddr::new(ip(source)?, v1_port(source_port)?),
        destination: SocketAddr::new(ip(destination)?, v1_port(destination_port)?),
    };
    Ok(Parsed::Complete { header, len })
}

/// A decimal port, 0 to 65535, without a sign or leading zeros (§2.1).
fn v1_port(text: &str) -> Result<u16, Invalid> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(Invalid("PROXY v1 port is not a decimal number"));
    }
    text.parse()
        .map_err(|_| Invalid("PROXY v1 port is above 65535"))
}

fn parse_v2(buffer: &[u8]) -> Result<Parsed, Invalid> {
    let Some(fixed) = buffer.get(..16) else {
        return Ok(Parsed::Incomplete);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(Invalid("PROXY v2 header of another version"));
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = 16 + length;
    if len > V2_MAX {
        return Err(Invalid("PROXY v2 header longer than fulcrum accepts"));
    }
    let Some(block) = buffer.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    let header = match command {
        0 => Header::Local,
        1 => v2_addresses(fixed[13], block)?,
        _ => return Err(Invalid("PROXY v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Parsed::Complete { header, len })
}

/// The addresses of a v2 PROXY command: TCP over IPv4 or IPv6; any other family or transport
/// leaves the socket's addresses standing (§2.2: a receiver must accept them).
fn v2_addresses(family: u8, block: &[u8]) -> Result<Header, Invalid> {
    let short = Invalid("PROXY v2 address block shorter than its family needs");
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        // AF_INET, STREAM
        0x11 => {
            let b = block.get(..12).ok_or(short)?;
            let ip = |at: usize| IpAddr::from([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        // AF_INET6, STREAM
        0x21 => {
            let b = block.get(..36).ok_or(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[at..at + 16]);
                IpAddr::from(octets)
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => Ok(Header::Local),
    }
}

/// Which version a pool sends its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Appends the header that tells a backend the connection is `source`'s, who connected to
/// `destination`. An IPv4 address with an IPv6 one is written as IPv4-mapped IPv6, since a
/// header has one family.
pub fn write(out: &mut Vec<u8>, version: Version, source: SocketAddr, destination: SocketAddr) {
    let (source_ip, destination_ip) =
        match (source.ip().to_canonical(), destination.ip().to_canonical()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
            (s, d) => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
        };
    match version {
        Version::V1 => {
            let family = if source_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {family} {source_ip} {destination_ip} {} {}\r\n",
                source.port(),
                destination.port()
            );
            out.extend_from_slice(line.as_bytes());
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY
            match (source_ip, destination_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&as_v6(s).octets());
                    out.extend_from_slice(&as_v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    #[test]
    fn version_1_headers_parse_to_their_addresses_and_length() {
        let table: &[(&[u8], Header)] = &[
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
                proxied("192.0.2.1:56324", "198.51.100.2:443"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
                proxied("[2001:db8::1]:65535", "[2001:db8::2]:0"),
            ),
            (b"PROXY UNKNOWN\r\n", Header::Local),
            (
                b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n",
                Header::Local,
            ),
        ];
        for (bytes, want) in table {
            let mut with_data = bytes.to_vec();
            with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&with_data),
                Ok(Parsed::Complete {
                    header: *want,
                    len: bytes.len()
                }),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
        }
    }

    #[test]
    fn malformed_version_1_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 443\r\n",
            b"PROXY TCP4 192.0.2.01 198.51.100.2 1 443\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 443\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 443\rX",
            b"proxy TCP4 192.0.2.1 198.51.100.2 1 443\r\n",
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert!(parse(&endless).is_err(), "no CRLF within 107 bytes");
    }

    #[test]
    fn what_is_written_parses_back_in_both_versions() {
        let cases = [
            ("192.0.2.1:56324", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
            ("192.0.2.1:5", "[2001:db8::2]:6"),
        ];
        for version in [Version::V1, Version::V2] {
            for (source, destination) in cases {
                let mut out = Vec::new();
                write(&mut out, version, addr(source), addr(destination));
                let Ok(Parsed::Complete { header, len }) = parse(&out) else {
                    panic!("{version:?} {source}: {out:?}");
                };
                assert_eq!(len, out.len());
                let Header::Proxied {
                    source: s,
                    destination: d,
                } = header
                else {
                    panic!("{header:?}");
                };
                assert_eq!(
                    (s.ip().to_canonical(), s.port()),
                    (addr(source).ip(), addr(source).port())
                );
                assert_eq!(d.port(), addr(destination).port());
                for cut in 0..out.len() {
                    assert_eq!(
                        parse(&out[..cut]),
                        Ok(Parsed::Incomplete),
                        "{version:?} cut at {cut}"
                    );
                }
            }
        }
        let mut v1 = Vec::new();
        write(
            &mut v1,
            Version::V1,
            addr("192.0.2.1:56324"),
            addr("198.51.100.2:443"),
        );
        assert_eq!(v1, b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");
    }

    /// A v2 header with this command/version byte, family byte and address block.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn version_2_local_other_families_tlvs_and_malformed_headers() {
        let ipv4 = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
        let with_tlv = [&ipv4[..], &[0x04, 0x00, 0x03, b'a', b'b', b'c']].concat();
        let got = parse(&v2(0x21, 0x11, &with_tlv));
        assert_eq!(
            got,
            Ok(Parsed::Complete {
                header: proxied("192.0.2.1:56324", "198.51.100.2:443"),
                len: 16 + with_tlv.len()
            })
        );
        let local = v2(0x20, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 16
            })
        );
        // UDP, UNIX and unspecified families keep the socket's addresses.
        for family in [0x12, 0x31, 0x00] {
            let block = [0u8; 216];
            assert!(matches!(
                parse(&v2(0x21, family, &block)),
                Ok(Parsed::Complete {
                    header: Header::Local,
                    ..
                })
            ));
        }
        for bad in [
            v2(0x11, 0x11, &ipv4),          // version 1 in a v2 header
            v2(0x22, 0x11, &ipv4),          // an unknown command
            v2(0x21, 0x11, &ipv4[..8]),     // too short for IPv4
            v2(0x21, 0x21, &ipv4),          // too short for IPv6
            v2(0x21, 0x11, &[0u8; V2_MAX]), // longer than accepted
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
