//! An [`Entry`] as one line of text: JSON (one object, keys always present, `null` where a
//! figure does not apply) or the Apache/nginx combined format, which log tools (GoAccess,
//! AWStats, most SIEM parsers) read as they are.

use std::fmt::Write as _;
use std::time::SystemTime;

use fulcrum_core::config::AccessLogFormat;
use serde::Serialize;

use super::Entry;

/// What the writer reads back from the request head it was given.
#[derive(Debug, Default, PartialEq, Eq)]
struct RequestLine<'a> {
    method: Option<&'a str>,
    path: Option<&'a str>,
    user_agent: Option<&'a str>,
    referer: Option<&'a str>,
}

/// The method, target, User-Agent and Referer of a request head fulcrum wrote (so one it
/// already checked: a request line of three fields, then `name: value` lines).
fn read_head(head: &[u8]) -> RequestLine<'_> {
    // Header values may hold obs-text bytes; what comes before them is read.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut lines = text.split("\r\n");
    let mut line = RequestLine::default();
    if let Some(request) = lines.next() {
        let mut fields = request.splitn(3, ' ');
        line.method = fields.next().filter(|m| !m.is_empty());
        line.path = fields.next();
    }
    for header in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("user-agent") {
            line.user_agent = Some(value);
        } else if name.eq_ignore_ascii_case("referer") {
            line.referer = Some(value);
        }
    }
    line
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    listener: &'a str,
    client: String,
    method: Option<&'a str>,
    path: Option<&'a str>,
    protocol: &'a str,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    pool: Option<&'a str>,
    backend: Option<String>,
    upstream_seconds: Option<f64>,
    total_seconds: f64,
    retries: u32,
    error: Option<&'a str>,
    user_agent: Option<&'a str>,
    referer: Option<&'a str>,
}

/// Appends `entry`'s line (with its newline) to `out`.
pub fn render(entry: &Entry, listener: &str, format: AccessLogFormat, out: &mut String) {
    let head = entry.head.as_deref().map(read_head).unwrap_or_default();
    let time = humantime::format_rfc3339_micros(entry.time).to_string();
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine {
                time: &time,
                listener,
                client: entry.client.to_string(),
                method: head.method,
                path: head.path,
                protocol: entry.protocol,
                status: (entry.status != 0).then_some(entry.status),
                bytes_in: entry.bytes_in,
                bytes_out: entry.bytes_out,
                pool: entry.pool.as_deref().map(|p| p.name.as_str()),
                backend: entry.backend.map(|b| b.to_string()),
                upstream_seconds: entry.upstream.map(|d| d.as_secs_f64()),
                total_seconds: entry.total.as_secs_f64(),
                retries: entry.retries,
                error: entry.error.map(|side| side.label()),
                user_agent: head.user_agent,
                referer: head.referer,
            };
            // Serializing plain strings and numbers into a String cannot fail.
            if let Ok(text) = serde_json::to_string(&line) {
                out.push_str(&text);
            }
        }
        AccessLogFormat::Combined => {
            let request = match (head.method, head.path) {
                (Some(method), Some(path)) => format!("{method} {path} {}", entry.protocol),
                _ => "-".to_string(),
            };
            let _ = write!(
                out,
                "{} - - [{}] \"{}\" ",
                entry.client.ip(),
                combined_time(entry.time),
                Escaped(&request)
            );
            match entry.status {
                0 => out.push('-'),
                status => {
                    let _ = write!(out, "{status}");
                }
            }
            let _ = write!(
                out,
                " {} \"{}\" \"{}\"",
                entry.bytes_out,
                Escaped(head.referer.unwrap_or("-")),
                Escaped(head.user_agent.unwrap_or("-"))
            );
        }
    }
    out.push('\n');
}

/// `03/Dec/2026:08:15:30 +0000`: the combined format's time, in UTC.
fn combined_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `2026-12-03T08:15:30Z`: fixed positions.
    let iso = humantime::format_rfc3339_seconds(time).to_string();
    let field = |range: std::ops::Range<usize>| iso.get(range).unwrap_or("00");
    let month = field(5..7).parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!(
        "{}/{}/{}:{} +0000",
        field(8..10),
        MONTHS[month - 1],
        field(0..4),
        field(11..19)
    )
}

/// A quoted field of the combined format, escaped as nginx does: `"` and `\` with a
/// backslash, control and non-ASCII bytes as `\xHH`, so a line is always one line.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0.bytes() {
            match byte {
                b'"' | b'\\' => write!(f, "\\{}", byte as char)?,
                0x20..=0x7e => f.write_char(byte as char)?,
                _ => write!(f, "\\x{byte:02X}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error::ErrorSide;
    use std::time::Duration;

    fn entry(head: Option<&str>) -> Entry {
        Entry {
            // 2026-12-03T08:15:30.25Z
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_285_730_250),
            client: "192.0.2.7:40000".parse().unwrap(),
            head: head.map(|h| h.as_bytes().into()),
            protocol: "HTTP/1.1",
            status: 502,
            bytes_in: 78,
            bytes_out: 140,
            pool: None,
            backend: Some("127.0.0.1:9000".parse().unwrap()),
            upstream: None,
            total: Duration::from_micros(1500),
            retries: 1,
            error: Some(ErrorSide::Upstream),
        }
    }

    const HEAD: &str = "GET /a?b=1 HTTP/1.1\r\nhost: x\r\nUser-Agent: curl/8.0 \"q\"\r\nreferer: http://r/\r\n\r\n";

    #[test]
    fn the_writer_reads_method_path_and_the_two_headers_back() {
        let cases: &[(&str, RequestLine<'_>)] = &[
            (
                HEAD,
                RequestLine {
                    method: Some("GET"),
                    path: Some("/a?b=1"),
                    user_agent: Some("curl/8.0 \"q\""),
                    referer: Some("http://r/"),
                },
            ),
            (
                "POST / HTTP/1.1\r\nhost: x\r\n\r\n",
                RequestLine {
                    method: Some("POST"),
                    path: Some("/"),
                    ..RequestLine::default()
                },
            ),
            ("", RequestLine::default()),
        ];
        for (head, expected) in cases {
            assert_eq!(&read_head(head.as_bytes()), expected, "{head:?}");
        }
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let mut out = String::new();
        render(&entry(Some(HEAD)), "web", AccessLogFormat::Json, &mut out);
        assert!(
            out.ends_with('\n') && out.matches('\n').count() == 1,
            "{out}"
        );
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["time"], "2026-12-03T08:15:30.250000Z");
        assert_eq!(value["listener"], "web");
        assert_eq!(value["client"], "192.0.2.7:40000");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["path"], "/a?b=1");
        assert_eq!(value["protocol"], "HTTP/1.1");
        assert_eq!(value["status"], 502);
        assert_eq!(value["bytes_in"], 78);
        assert_eq!(value["bytes_out"], 140);
        assert_eq!(value["backend"], "127.0.0.1:9000");
        assert_eq!(value["upstream_seconds"], serde_json::Value::Null);
        assert_eq!(value["total_seconds"], 0.0015);
        assert_eq!(value["retries"], 1);
        assert_eq!(value["error"], "upstream");
        assert_eq!(value["user_agent"], "curl/8.0 \"q\"");
    }

    #[test]
    fn a_combined_line_matches_what_log_tools_parse() {
        let mut out = String::new();
        render(
            &entry(Some(HEAD)),
            "web",
            AccessLogFormat::Combined,
            &mut out,
        );
        assert_eq!(
            out,
            "192.0.2.7 - - [03/Dec/2026:08:15:30 +0000] \"GET /a?b=1 HTTP/1.1\" 502 140 \"http://r/\" \"curl/8.0 \\\"q\\\"\"\n"
        );
        let mut refused = String::new();
        let mut e = entry(None);
        e.status = 0;
        render(&e, "web", AccessLogFormat::Combined, &mut refused);
        assert_eq!(
            refused,
            "192.0.2.7 - - [03/Dec/2026:08:15:30 +0000] \"-\" - 140 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn control_and_non_ascii_bytes_never_break_a_combined_line() {
        assert_eq!(Escaped("a\nb\u{e9}").to_string(), "a\\x0Ab\\xC3\\xA9");
    }
}
