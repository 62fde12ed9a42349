//! Every default in one place, so the README's configuration reference and the code agree.

use std::time::Duration;

/// The longest any configured duration may be. Timers and deadlines add configured
/// durations to the clock; a ceiling keeps every such sum far from overflowing (and no
/// timeout, TTL or window a load balancer needs is longer than a year).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one listener holds open at once (across workers).
pub const MAX_CONNECTIONS: u64 = 10_000;
/// How long an upload may take before `min_upload_rate` applies.
pub const MIN_UPLOAD_GRACE: Duration = Duration::from_secs(5);
/// A PROXY protocol header must arrive within this of accept.
pub const PROXY_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// HTTP/2 (RFC 9113 §6.5.2 recommends at least 100 concurrent streams; HAProxy's default).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The protocol's own initial stream window (RFC 9113 §6.9.2), as HAProxy and nginx use.
pub const H2_INITIAL_STREAM_WINDOW: u32 = 65_535;
/// Large enough that one connection's uploads are not throttled by its window.
pub const H2_INITIAL_CONNECTION_WINDOW: u32 = 1 << 20;
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNECT_ATTEMPTS: u32 = 3;
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// High enough that steady concurrency never closes connections it is about to need again
/// (a cap below the concurrency makes every request past it open a new connection).
pub const MAX_IDLE_PER_BACKEND: usize = 1024;
pub const WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 10_000;
pub const SLOW_START: Duration = Duration::from_secs(30);
pub const SLOW_START_MIN_PERCENT: u32 = 10;
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const RISE: u32 = 2;
pub const FALL: u32 = 3;
pub const FAILURE_DECAY: Duration = Duration::from_secs(30);
pub const MAX_EJECTION_PERCENT: u32 = 20;
pub const PANIC_THRESHOLD_PERCENT: u32 = 50;
pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(30);
pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(300);
/// Auto drain timeout: 2 × observed p99, within these bounds; the fallback without data.
pub const DRAIN_MIN: Duration = Duration::from_secs(1);
pub const DRAIN_MAX: Duration = Duration::from_secs(300);
pub const DRAIN_WITHOUT_DATA: Duration = Duration::from_secs(30);
pub const RING_POINTS: u32 = 160;
pub const MAGLEV_TABLE_SIZE: u32 = 65_537;
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
pub const STICKY_COOKIE_TTL: Duration = Duration::from_secs(3600);
/// A WebSocket (or any switched protocol) with nothing sent either way for this long is
/// closed: HAProxy's usual `timeout tunnel`, and Envoy's connection idle timeout.
pub const WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The handshake header that tells a backend fulcrum's id of the connection.
pub const WEBSOCKET_CONNECTION_ID_HEADER: &str = "x-fulcrum-connection-id";
/// Every key of the Redis connection registry starts with this.
pub const WS_REGISTRY_KEY_PREFIX: &str = "fulcrum:ws:";
/// A registry entry lives this long unless refreshed (every third of it while the connection
/// is open), so a killed fulcrum's entries are gone within it.
pub const WS_REGISTRY_TTL: Duration = Duration::from_secs(30);
/// The shortest TTL: refreshed every second at most.
pub const WS_REGISTRY_MIN_TTL: Duration = Duration::from_secs(3);
pub const HA_ETCD_TTL: Duration = Duration::from_secs(2);
pub const HA_ZOOKEEPER_SESSION: Duration = Duration::from_secs(2);
pub const HA_HEARTBEAT: Duration = Duration::from_millis(100);
pub const HA_HEARTBEAT_PORT: u16 = 7946;
/// keepalived sends 5 gratuitous ARPs on promotion; spaced so one survives ARP rate limits
/// (a neighbour entry updated less than `locktime`, 1 s, ago may ignore the next one).
pub const GARP_COUNT: u32 = 5;
pub const GARP_INTERVAL: Duration = Duration::from_millis(300);

/// Access-log lines that may wait for the writer thread: about a second of a busy worker's
/// requests, a few MiB at most.
pub const ACCESS_LOG_QUEUE: i64 = 16_384;
