//! The validated configuration: every value parsed, every reference resolved, every default
//! filled in. Code that runs the load balancer only ever sees this model.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::routing::RouteTable;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The admin API listener; `None` when the file has no `[admin]` section.
    pub admin: Option<Admin>,
    pub runtime: Runtime,
    pub listeners: Vec<Listener>,
    pub pools: BTreeMap<String, Pool>,
    /// High availability between several fulcrum instances; `None` without `[ha]`.
    pub ha: Option<Ha>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// This instance's name, unique among the instances of one pair or group.
    pub node: String,
    pub mode: HaMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaMode {
    /// Every instance serves (behind ECMP or DNS); hashing makes their picks identical.
    ActiveActive,
    /// One instance is elected active through a store and holds the virtual IP.
    ActivePassive(Box<ActivePassive>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePassive {
    pub election: Election,
    pub vip: Option<Vip>,
    /// Other instances' heartbeat addresses (this instance's own address may be listed too:
    /// the same file can then serve every instance).
    pub peers: Vec<SocketAddr>,
    pub heartbeat: Duration,
    pub heartbeat_bind: SocketAddr,
    /// A file holding the group's shared key: heartbeats are then authenticated (HMAC-SHA256)
    /// and a datagram without a valid tag is ignored.
    pub heartbeat_key_file: Option<std::path::PathBuf>,
    /// Commands run on promotion and demotion (program then arguments); the epoch is in the
    /// environment.
    pub on_promote: Vec<String>,
    pub on_demote: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub store: ElectionStore,
    /// How long the store keeps a silent leader's claim (etcd lease TTL, ZooKeeper session).
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionStore {
    /// A lease and a create-if-absent transaction on `key`.
    Etcd { endpoints: Vec<String>, key: String },
    /// Ephemeral sequential nodes under `path`; the lowest sequence leads.
    ZooKeeper { servers: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub interface: String,
    /// Gratuitous ARP announcements sent on promotion, spaced by `garp_interval`.
    pub garp_count: u32,
    pub garp_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub bind: SocketAddr,
    /// A file holding the bearer token every admin request must present. Required when
    /// `bind` is not a loopback address.
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Worker threads, each running its own event loop; 0 means one per available CPU.
    pub workers: usize,
    /// How long in-flight requests and connections may run on after a shutdown signal (and,
    /// in a binary upgrade, in the old process after the new one is ready).
    pub shutdown_grace: Duration,
    /// The Unix socket through which a new binary takes the listening sockets over (`None`:
    /// the default under the runtime directory, chosen by the daemon).
    pub upgrade_socket: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// The pool behind the listener; for `tls_passthrough`, the pool for server names no
    /// route matches (`None`: such connections are closed). Always set for http and tcp.
    pub pool: Option<String>,
    /// A client connection with no traffic for this long is closed (HTTP: between requests).
    pub idle_timeout: Duration,
    pub protocol: ListenerProtocol,
    /// TLS termination: clients speak TLS, the pool gets what is inside. `None`: plain TCP.
    pub tls: Option<ListenerTls>,
    /// Whether its requests and connections are counted for `/metrics` (on by default; off
    /// only to measure what counting costs).
    pub metrics: bool,
    /// One line per request (HTTP) or connection (TCP), when configured.
    pub access_log: Option<AccessLog>,
    /// Connections start with a PROXY protocol header, from these sources only.
    pub proxy_protocol: Option<ProxyProtocolIn>,
    /// Connections open at once on this listener (all workers); at the limit, accepting
    /// pauses and new connections wait in the kernel's queue.
    pub max_connections: u64,
    /// Connections open at once from one client address; more are closed at once. 0: off.
    pub max_connections_per_ip: u32,
    /// HTTP listeners: the pool each request goes to, by its content, in order; a request no
    /// route takes goes to `pool`. Empty for other protocols.
    pub routes: RouteTable,
}

/// Requests a client address may make (HTTP listeners), as a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
    pub action: RateLimitAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAction {
    /// `429 Too Many Requests` with `Retry-After`.
    Status429,
    /// The connection is closed unanswered.
    Close,
}

/// The least a request body must average (HTTP listeners): after `grace`, each
/// `bytes_per_second` bytes buy one more second; an upload behind that gets 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinUploadRate {
    pub bytes_per_second: u64,
    pub grace: Duration,
}

/// A listener's incoming PROXY protocol (v1 and v2 both accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolIn {
    /// Peers that may send the header; a connection from anyone else is closed at once.
    pub allow: Networks,
    /// The whole header must arrive within this from accept, or the connection is closed.
    pub timeout: Duration,
}

/// A listener's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub format: AccessLogFormat,
    pub destination: LogDestination,
    /// Lines that may wait for the writer; when it falls this far behind, lines are dropped
    /// (and counted), never waited for.
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// The Apache/nginx "combined" format (HTTP listeners only).
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    File(std::path::PathBuf),
}

/// A listener's TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Chosen by the client's server name (SNI) among each certificate's own DNS names; the
    /// first is the default for a name none of them carries (and for clients without SNI).
    pub certificates: Vec<CertificateFiles>,
    pub min_version: TlsVersion,
    /// Protocols offered by ALPN, in order of preference; empty: no ALPN.
    pub alpn: Vec<String>,
    /// The whole handshake must finish within this from accept, or the connection is closed.
    pub handshake_timeout: Duration,
    /// Client certificates (mTLS): `None` asks for none.
    pub client_auth: Option<ClientAuth>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Verifying client certificates against a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM file of the CA certificates a client certificate must chain to.
    pub ca: std::path::PathBuf,
    /// `true`: a client without a valid certificate is refused in the handshake. `false`: a
    /// client may present none (a presented one must still be valid).
    pub required: bool,
    /// Request header that carries the verified client certificate's subject to the backend
    /// (HTTP listeners). A client-sent header of that name is always removed.
    pub subject_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http(HttpLimits),
    Tcp,
    /// TLS relayed untouched to a pool chosen by the ClientHello's server name, in route
    /// order.
    TlsPassthrough(Vec<SniRoute>),
}

impl ListenerProtocol {
    pub fn name(&self) -> &'static str {
        match self {
            ListenerProtocol::Http(_) => "http",
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::TlsPassthrough(_) => "tls_passthrough",
        }
    }

    /// Whether the listener relays bytes (so its pools can hash on the client address only).
    pub fn is_l4(&self) -> bool {
        !matches!(self, ListenerProtocol::Http(_))
    }
}

/// One entry of a `tls_passthrough` route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    pub server_name: ServerNamePattern,
    pub pool: String,
}

/// A server name as routes match it: exactly (case-insensitively), or `*.suffix`, which
/// matches one more label in front of `suffix` (as certificates' wildcards do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerNamePattern {
    Exact(String),
    /// The part after `*.`.
    Wildcard(String),
}

impl ServerNamePattern {
    /// `db.example.com` or `*.apps.example.com`: DNS labels of letters, digits and `-`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.to_ascii_lowercase();
        let valid_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        match text.strip_prefix("*.") {
            Some(suffix) if valid_name(suffix) => Some(Self::Wildcard(suffix.to_string())),
            Some(_) => None,
            None if valid_name(&text) => Some(Self::Exact(text)),
            None => None,
        }
    }

    pub fn matches(&self, server_name: &str) -> bool {
        match self {
            Self::Exact(name) => name.eq_ignore_ascii_case(server_name),
            Self::Wildcard(suffix) => server_name.split_once('.').is_some_and(|(first, rest)| {
                !first.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }),
        }
    }

    /// True when every name `other` matches, this matches too (so `other` after this in a
    /// route table is never reached).
    pub fn covers(&self, other: &ServerNamePattern) -> bool {
        match (self, other) {
            (_, Self::Exact(name)) => self.matches(name),
            (Self::Wildcard(a), Self::Wildcard(b)) => a == b,
            (Self::Exact(_), Self::Wildcard(_)) => false,
        }
    }
}

impl std::fmt::Display for ServerNamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The route a server name takes: the first that matches, in order. `None`: no route does
/// (the listener's default pool, if any, takes it), or the client sent no server name.
pub fn route_by_server_name<'a>(
    routes: &'a [SniRoute],
    server_name: Option<&str>,
) -> Option<&'a SniRoute> {
    let name = server_name?;
    routes.iter().find(|r| r.server_name.matches(name))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Total time a client has to send a complete request head, from its first byte (or from
    /// accept for the first request). Not an idle timer: trickling bytes does not extend it.
    pub header_timeout: Duration,
    /// Largest request head (request line plus headers); larger heads get 431.
    pub max_header_bytes: usize,
    /// Longest request line; longer ones get 414.
    pub max_request_line_bytes: usize,
    pub http2: Http2Limits,
    /// Peers whose X-Forwarded-* and Forwarded headers are kept and appended to; from any
    /// other peer they are replaced with what fulcrum saw.
    pub trusted_proxies: Networks,
    pub headers_with_underscores: UnderscoreHeaders,
    pub rate_limit: Option<RateLimit>,
    pub min_upload_rate: Option<MinUploadRate>,
}

/// A list of address networks (`10.0.0.0/8`, `2001:db8::/32`, or single addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

impl Networks {
    /// Whether `ip` is in one of the networks. An IPv4 peer seen through an IPv6 socket
    /// (`::ffff:10.0.0.1`) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What happens to a request header whose name has an underscore. CGI-style backends (and
/// nginx, PHP, WSGI) read `X_Forwarded_For` as `X-Forwarded-For`, so such a name can smuggle
/// a header past rules that look for the dashed one (Envoy's reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// The request is refused with 400.
    Reject,
    /// The header is removed; the request goes on.
    Drop,
    /// Forwarded as any other header.
    Allow,
}

/// What an HTTP/2 client connection may use (sent in its SETTINGS and enforced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams open at once; more are refused (RST_STREAM REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream before fulcrum has read them.
    pub initial_stream_window: u32,
    /// Bytes a client may send on the whole connection before fulcrum has read them.
    pub initial_connection_window: u32,
    /// Largest header list (decoded names and values, 32 bytes more per field); larger
    /// heads get 431, endless CONTINUATION frames end the connection.
    pub max_header_list_bytes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub algorithm: Algorithm,
    pub backends: Vec<Backend>,
    pub connect_timeout: Duration,
    /// Attempts to connect for one request or connection, each to a different backend.
    pub connect_attempts: u32,
    /// Time allowed for an upstream to produce response headers (HTTP only); then 504.
    pub response_timeout: Duration,
    /// Pooled keep-alive connections to a backend unused for this long are closed.
    pub upstream_idle_timeout: Duration,
    /// Most idle keep-alive connections kept per backend by each worker thread.
    pub max_idle_per_backend: usize,
    /// Backends added at runtime or returning from ejection ramp up over this; zero: off.
    pub slow_start: Duration,
    pub slow_start_min_percent: u32,
    pub drain_timeout: DrainTimeout,
    /// Active checks; `None` when the pool has no `[pools.NAME.health]` section.
    pub health: Option<Health>,
    /// Passive checks on live traffic; `None` without `[pools.NAME.outlier]`.
    pub outlier: Option<Outlier>,
    /// What hashing algorithms hash; required for `ring_hash` and `maglev`.
    pub hash_key: Option<HashKey>,
    /// How requests without a hash key are balanced: `Random` or `RoundRobin`.
    pub hash_fallback: Algorithm,
    pub sticky_cookie: Option<StickyCookie>,
    pub hash_balance_factor: Option<f64>,
    pub ring_points: u32,
    pub maglev_table_size: u32,
    pub ewma_decay: Duration,
    pub ewma_default_rtt: Duration,
    /// Backends learnt from a store, added to the static `backends`.
    pub discovery: Option<Discovery>,
    /// TLS to the backends; `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// What HTTP listeners speak to the backends.
    pub protocol: UpstreamProtocol,
    pub websocket: WebSocket,
    /// A PROXY protocol header sent first on every backend connection, naming the client;
    /// `None`: none. (Such HTTP/1 connections serve one request each: a header names one
    /// client, so a connection is never shared.)
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    pub circuit_breakers: CircuitBreakers,
}

/// How much a pool takes at once, across workers (HTTP listeners); beyond a limit a request
/// is answered `503` at once, naming the limit. `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitBreakers {
    /// Requests in flight to the pool's backends (a WebSocket counts while it is open).
    pub max_requests: Option<u64>,
}

/// WebSocket connections through the pool's HTTP listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocket {
    /// An upgraded connection with nothing sent either way for this long is closed.
    pub idle_timeout: Duration,
    /// The request header (lower case) that carries fulcrum's id of the connection to the
    /// backend in the handshake.
    pub connection_id_header: String,
    /// When a drain's deadline nears (and when fulcrum stops), clients get a close frame
    /// with code 1001 between two of the backend's frames, instead of a reset at the deadline.
    pub close_on_drain: bool,
    /// Every open connection recorded in Redis; `None` without `websocket.registry`.
    pub registry: Option<WsRegistry>,
}

/// Where the pool's WebSockets are recorded, so other services find which backend holds a
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsRegistry {
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path/to/socket`.
    pub redis: String,
    pub key_prefix: String,
    /// How long an entry outlives its last refresh.
    pub ttl: Duration,
}

/// The HTTP version a pool's backends are spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2: each request a stream, many streams over each connection (h2c without TLS,
    /// ALPN `h2` with it). What gRPC backends need.
    Http2,
    /// Over TLS, whichever of the two each backend chooses by ALPN.
    Auto,
}

impl UpstreamProtocol {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// How fulcrum speaks TLS to a pool's backends. The certificate is always verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the backend's certificate; `None`: the backend's IP
    /// address (which the certificate must then carry).
    pub server_name: Option<String>,
    /// PEM file of the CA(s) to trust; `None`: the system's trust store.
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// One key per backend under `prefix`, JSON `{"addr": "...", "weight": N}`, on a lease.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// One ephemeral znode per backend under `path`, named by its address, same JSON.
    ZooKeeper { servers: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A cookie's value.
    Cookie(String),
    /// A header's value (name in lower case).
    Header(String),
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
    /// A query parameter's value.
    Query(String),
}

impl HashKey {
    pub fn parse(text: &str) -> Option<Self> {
        let named = |prefix: &str| {
            text.strip_prefix(prefix)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
        };
        match text {
            "client_ip" => Some(HashKey::ClientIp),
            "path" => Some(HashKey::Path),
            _ => named("cookie:")
                .map(HashKey::Cookie)
                .or_else(|| named("header:").map(|n| HashKey::Header(n.to_ascii_lowercase())))
                .or_else(|| named("query:").map(HashKey::Query)),
        }
    }
}

/// A cookie fulcrum sets when a request has no hash cookie, so the next request sticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    pub name: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainTimeout {
    /// 2 × the backend's observed p99 request duration, clamped to [1 s, 300 s]; 30 s
    /// while there is no data.
    Auto,
    Fixed(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub liveness: Probe,
    pub readiness: Option<HttpCheck>,
    pub failure_decay: Duration,
    pub max_ejection_percent: u32,
    pub panic_threshold_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect that succeeds within the timeout.
    Tcp,
    Http(HttpCheck),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub path: String,
    pub expect: StatusRange,
    /// The Host header to send; the backend's address when absent.
    pub host: Option<String>,
}

/// An inclusive range of HTTP status codes, written "200-399" or "204".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (low, high) = match text.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = text.trim().parse().ok()?;
                (v, v)
            }
        };
        ((100..=599).contains(&low) && (100..=599).contains(&high) && low <= high)
            .then_some(Self { low, high })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Response statuses that count as failures (connect errors and timeouts always do).
    pub failure_statuses: StatusRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    Random,
    P2c,
    P2cEwma,
    RingHash,
    Maglev,
}

impl Algorithm {
    pub const ALL: [Algorithm; 7] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::P2c,
        Algorithm::P2cEwma,
        Algorithm::RingHash,
        Algorithm::Maglev,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::RingHash => "ring_hash",
            Algorithm::Maglev => "maglev",
        }
    }

    /// Ring hash and Maglev: the backend follows from the request's key.
    pub fn is_hashing(self) -> bool {
        matches!(self, Algorithm::RingHash | Algorithm::Maglev)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
