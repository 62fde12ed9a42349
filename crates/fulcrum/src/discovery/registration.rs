//! The registration layout, stable so any language can register: one key per backend,
//! `<prefix><addr>`, whose value is JSON `{"addr": "IP:PORT", "weight": N}` with optional
//! `zone` and `meta` (ignored by fulcrum today, kept for operators).

use std::net::SocketAddr;

use fulcrum_core::config::{defaults, Backend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Registration {
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// The backend a registration value describes, or why it cannot be used.
pub fn parse(value: &[u8]) -> Result<Backend, String> {
    let r: Registration =
        serde_json::from_slice(value).map_err(|e| format!("not a registration: {e}"))?;
    let addr: SocketAddr = r
        .addr
        .parse()
        .map_err(|_| format!("`{}` is not an address (IP:PORT)", r.addr))?;
    let weight = r.weight.unwrap_or(defaults::WEIGHT);
    if !(1..=defaults::MAX_WEIGHT).contains(&weight) {
        return Err(format!(
            "weight {weight} is outside 1..={}",
            defaults::MAX_WEIGHT
        ));
    }
    Ok(Backend { addr, weight })
}

pub fn encode(addr: SocketAddr, weight: u32) -> String {
    serde_json::to_string(&Registration {
        addr: addr.to_string(),
        weight: Some(weight),
        zone: None,
        meta: None,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_say_why_not() {
        let ok = parse(br#"{"addr": "10.0.0.1:80", "weight": 3, "zone": "a", "meta": {"v": 2}}"#);
        assert_eq!(ok.map(|b| (b.addr.port(), b.weight)), Ok((80, 3)));
        assert_eq!(
            parse(br#"{"addr": "10.0.0.1:80"}"#).map(|b| b.weight),
            Ok(1)
        );
        for bad in [
            &b"not json"[..],
            br#"{"addr": "nowhere"}"#,
            br#"{"addr": "10.0.0.1:80", "weight": 0}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let encoded = encode("10.0.0.2:81".parse().unwrap_or_else(|_| unreachable!()), 2);
        assert_eq!(parse(encoded.as_bytes()).map(|b| b.weight), Ok(2));
    }
}
