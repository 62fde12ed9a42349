//! The configuration file exactly as written: serde structs with `deny_unknown_fields`.
//!
//! Values that can be wrong in interesting ways (addresses, durations, names of algorithms)
//! stay strings here, so validation can report every mistake at once with its path instead of
//! stopping at the first one serde meets.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub protocol: Option<String>,
    pub pool: Option<String>,
    pub idle_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_request_line_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub algorithm: Option<String>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub connect_timeout: Option<String>,
    pub connect_attempts: Option<i64>,
    pub response_timeout: Option<String>,
    pub upstream_idle_timeout: Option<String>,
    pub max_idle_per_backend: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub addr: Option<String>,
    pub weight: Option<i64>,
}
