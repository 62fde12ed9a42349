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
    pub ha: Option<RawHa>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    pub mode: Option<String>,
    pub node: Option<String>,
    pub election: Option<RawElection>,
    pub vip: Option<RawVip>,
    pub peers: Option<Vec<String>>,
    pub heartbeat: Option<String>,
    pub heartbeat_bind: Option<String>,
    pub heartbeat_key_file: Option<String>,
    pub on_promote: Option<Vec<String>>,
    pub on_demote: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElection {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub key: Option<String>,
    pub ttl: Option<String>,
    pub servers: Option<String>,
    pub path: Option<String>,
    pub session_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub address: Option<String>,
    pub interface: Option<String>,
    pub garp_count: Option<i64>,
    pub garp_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub upgrade_socket: Option<String>,
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
    pub trusted_proxies: Option<Vec<String>>,
    pub headers_with_underscores: Option<String>,
    pub tls: Option<RawListenerTls>,
    pub http2: Option<RawHttp2>,
    pub routes: Option<Vec<RawRoute>>,
    pub metrics: Option<bool>,
    pub access_log: Option<RawAccessLog>,
    pub proxy_protocol: Option<RawProxyProtocolIn>,
    pub max_connections: Option<i64>,
    pub max_connections_per_ip: Option<i64>,
    pub rate_limit: Option<RawRateLimit>,
    pub min_upload_rate: Option<RawMinUploadRate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_second: Option<i64>,
    pub burst: Option<i64>,
    pub action: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMinUploadRate {
    pub bytes_per_second: Option<i64>,
    pub grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocolIn {
    pub allow: Option<Vec<String>>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<String>,
    pub path: Option<String>,
    pub queue: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    pub max_concurrent_streams: Option<i64>,
    pub initial_stream_window_bytes: Option<i64>,
    pub initial_connection_window_bytes: Option<i64>,
    pub max_header_list_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// `tls_passthrough` routes match this; every other key is for HTTP routes.
    pub server_name: Option<String>,
    pub pool: Option<String>,
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    pub methods: Option<Vec<String>>,
    pub header: Option<RawFieldMatch>,
    pub headers: Option<Vec<RawFieldMatch>>,
    pub query_param: Option<RawFieldMatch>,
    pub query_params: Option<Vec<RawFieldMatch>>,
    pub rewrite_prefix: Option<String>,
    pub rewrite_host: Option<String>,
}

/// A pool's limits on what it takes at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreakers {
    pub max_requests: Option<i64>,
}

/// A header or query parameter an HTTP route asks for: present (neither `value` nor
/// `regex`), equal to `value`, or wholly matching `regex`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldMatch {
    pub name: Option<String>,
    pub value: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub handshake_timeout: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub client_subject_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
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
    pub slow_start: Option<String>,
    pub slow_start_min_percent: Option<i64>,
    pub drain_timeout: Option<String>,
    pub health: Option<RawHealth>,
    pub outlier: Option<RawOutlier>,
    pub hash_key: Option<String>,
    pub hash_fallback: Option<String>,
    pub sticky_cookie: Option<RawStickyCookie>,
    pub hash_balance_factor: Option<f64>,
    pub ring_points: Option<i64>,
    pub maglev_table_size: Option<i64>,
    pub ewma_decay: Option<String>,
    pub ewma_default_rtt: Option<String>,
    pub discovery: Option<RawDiscovery>,
    pub tls: Option<RawUpstreamTls>,
    pub protocol: Option<String>,
    pub websocket: Option<RawWebSocket>,
    pub proxy_protocol: Option<String>,
    pub circuit_breakers: Option<RawCircuitBreakers>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub idle_timeout: Option<String>,
    pub connection_id_header: Option<String>,
    pub close_on_drain: Option<bool>,
    pub registry: Option<RawWsRegistry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWsRegistry {
    pub redis: Option<String>,
    pub key_prefix: Option<String>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub server_name: Option<String>,
    pub ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub servers: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStickyCookie {
    pub name: Option<String>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub liveness: Option<RawProbe>,
    pub readiness: Option<RawProbe>,
    pub failure_decay: Option<String>,
    pub max_ejection_percent: Option<i64>,
    pub panic_threshold_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub tcp: Option<bool>,
    pub path: Option<String>,
    pub expect: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<i64>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub failure_statuses: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub addr: Option<String>,
    pub weight: Option<i64>,
}
