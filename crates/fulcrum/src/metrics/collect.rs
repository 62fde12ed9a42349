//! Everything `/metrics` shows, gathered at scrape time: the request path's shards added up,
//! and the pools', HA's and reloads' state read as the admin API reads it. Gathering
//! ([`gather`]) is apart from encoding ([`Scrape`]), so the families can be checked as data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fulcrum_core::health::BackendState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::cell::HistogramSum;
use super::exposition::{self, Format};
use super::series::CODE_CLASSES;
use crate::ha::HaShared;
use crate::pool::Pools;
use crate::proxy::error::ErrorSide;
use crate::reload::ReloadRecord;
use crate::views::ListenerViews;

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramSum),
    /// An info metric: its labels are the information; the value is 1.
    Info,
}

/// One metric family: a name, its help, and its samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// Without `_total` for counters and `_info` for info metrics (OpenMetrics adds them).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub samples: Vec<(Labels, Value)>,
}

/// Builds the families in order; a family is created on its first sample.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: Labels,
        value: Value,
    ) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push((labels, value)),
            None => self.0.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, value)],
            }),
        }
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, value: u64) {
        self.push(
            name,
            help,
            MetricType::Counter,
            labels,
            Value::Counter(value),
        );
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.push(name, help, MetricType::Gauge, labels, Value::Gauge(value));
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        value: HistogramSum,
    ) {
        self.push(
            name,
            help,
            MetricType::Histogram,
            labels,
            Value::Histogram(value),
        );
    }
}

/// What the scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    pub pools: Arc<Pools>,
    pub listeners: Arc<ListenerViews>,
    pub ha: Option<Arc<HaShared>>,
    pub reloads: Arc<ReloadRecord>,
    /// When the process started (Unix seconds).
    pub started_unix: f64,
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

const BACKEND_STATES: [BackendState; 8] = [
    BackendState::Warming,
    BackendState::Active,
    BackendState::Failing,
    BackendState::Ejected,
    BackendState::Dead,
    BackendState::Draining,
    BackendState::Drained,
    BackendState::Disabled,
];

/// Every family, from the current state.
pub fn gather(sources: &Sources) -> Vec<Family> {
    let mut f = Families::default();
    process(&mut f, sources);
    listeners(&mut f, sources);
    pools(&mut f, sources);
    ha(&mut f, sources);
    f.0
}

fn process(f: &mut Families, sources: &Sources) {
    f.push(
        "fulcrum_build",
        "The running fulcrum's version.",
        MetricType::Info,
        labels([("version", env!("CARGO_PKG_VERSION"))]),
        Value::Info,
    );
    f.gauge(
        "fulcrum_start_time_seconds",
        "When this process started, in Unix seconds.",
        Vec::new(),
        sources.started_unix,
    );
    let reloads = sources.reloads.figures();
    for (result, n) in [("ok", reloads.ok), ("failed", reloads.failed)] {
        f.counter(
            "fulcrum_reloads",
            "Configuration reloads, by result (failed: refused whole, nothing changed).",
            labels([("result", result)]),
            n,
        );
    }
    f.gauge(
        "fulcrum_reload_last_success_time_seconds",
        "When the last reload was applied, in Unix seconds (0: none yet).",
        Vec::new(),
        reloads.last_success_unix,
    );
    f.gauge(
        "fulcrum_upgrade_generation",
        "Binary upgrades behind this process (0: started fresh).",
        Vec::new(),
        reloads.generation as f64,
    );
}

fn listeners(f: &mut Families, sources: &Sources) {
    let stats = sources.listeners.stats().clone();
    for l in &stats {
        let listener = l.name.as_str();
        let status = l.status();
        for (protocol, n) in [
            ("http1", status.connections.http1),
            ("http2", status.connections.http2),
            ("tcp", status.connections.tcp),
        ] {
            f.counter(
                "fulcrum_listener_connections",
                "Client connections accepted, by the protocol they spoke.",
                labels([("listener", listener), ("protocol", protocol)]),
                n,
            );
        }
        f.gauge(
            "fulcrum_listener_open_connections",
            "Client connections open now.",
            labels([("listener", listener)]),
            l.open_connections() as f64,
        );
        let refused = &l.refused;
        for (reason, counter) in [
            ("proxy_protocol", &refused.proxy_protocol),
            ("max_connections_per_ip", &refused.max_connections_per_ip),
            ("rate_limit", &refused.rate_limit),
        ] {
            f.counter(
                "fulcrum_listener_refused",
                "Connections closed (proxy_protocol, max_connections_per_ip) and requests refused (rate_limit) by the listener's limits.",
                labels([("listener", listener), ("reason", reason)]),
                counter.load(Ordering::Relaxed),
            );
        }
        for (reason, counter) in [
            ("max_connections", &refused.paused_full),
            ("out_of_descriptors", &refused.paused_starved),
        ] {
            f.counter(
                "fulcrum_listener_accept_pauses",
                "Pauses of the listener's accepting, at most 20 ms each, by cause.",
                labels([("listener", listener), ("reason", reason)]),
                counter.load(Ordering::Relaxed),
            );
        }
        if l.protocol == "http" {
            f.gauge(
                "fulcrum_websockets_open",
                "WebSockets open now (upgraded connections, each holding a backend).",
                labels([("listener", listener)]),
                l.websockets.len() as f64,
            );
        }
        let log = &l.access_log;
        for (name, help, counter) in [
            (
                "fulcrum_access_log_lines",
                "Access-log lines written.",
                &log.written,
            ),
            (
                "fulcrum_access_log_dropped",
                "Access-log lines dropped because the writer's queue was full (requests never wait for the log).",
                &log.dropped,
            ),
            (
                "fulcrum_access_log_write_errors",
                "Access-log lines lost because their write failed.",
                &log.failed,
            ),
        ] {
            f.counter(
                name,
                help,
                labels([("listener", listener)]),
                counter.load(Ordering::Relaxed),
            );
        }
        for (pool, t) in l.series.http_totals() {
            let lp = || labels([("listener", listener), ("pool", &pool)]);
            for (class, n) in CODE_CLASSES.iter().zip(t.requests) {
                let mut with_class = lp();
                with_class.push(("code_class", class.to_string()));
                f.counter(
                    "fulcrum_http_requests",
                    "HTTP requests answered, by status class of the answer (none: no response began).",
                    with_class,
                    n,
                );
            }
            for (side, n) in ErrorSide::ALL.iter().zip(t.errors) {
                let mut with_side = lp();
                with_side.push(("side", side.label().to_string()));
                f.counter(
                    "fulcrum_http_errors",
                    "fulcrum's own error answers, by whose fault: client (4xx), upstream (502, 504), none_available (503).",
                    with_side,
                    n,
                );
            }
            f.histogram(
                "fulcrum_http_routing_latency_seconds",
                "Latency fulcrum adds: from the request head received to the request sent upstream, pick, connect and retries included.",
                lp(),
                t.routing,
            );
            f.histogram(
                "fulcrum_http_upstream_latency_seconds",
                "The backend's own time: from the request sent upstream to its response head.",
                lp(),
                t.upstream,
            );
            f.histogram(
                "fulcrum_http_request_duration_seconds",
                "Whole requests: from the head received to the response relayed.",
                lp(),
                t.duration,
            );
        }
        for (pool, t) in l.series.tcp_totals() {
            let lp = || labels([("listener", listener), ("pool", &pool)]);
            f.counter(
                "fulcrum_tcp_connections",
                "TCP (L4) connections proxied or refused.",
                lp(),
                t.connections,
            );
            for side in [ErrorSide::Upstream, ErrorSide::NoneAvailable] {
                let mut with_side = lp();
                with_side.push(("side", side.label().to_string()));
                f.counter(
                    "fulcrum_tcp_errors",
                    "TCP connections closed without a backend: upstream (every connect failed), none_available (no backend to pick).",
                    with_side,
                    t.errors[side as usize],
                );
            }
            f.counter(
                "fulcrum_tcp_received_bytes",
                "Bytes received from TCP clients (and sent on to backends).",
                lp(),
                t.received,
            );
            f.counter(
                "fulcrum_tcp_sent_bytes",
                "Bytes sent to TCP clients.",
                lp(),
                t.sent,
            );
            f.histogram(
                "fulcrum_tcp_connection_duration_seconds",
                "How long TCP connections lasted.",
                lp(),
                t.duration,
            );
        }
    }
}

/// A pool's Redis registry of WebSockets: whether Redis answers, and what writing to it cost.
fn ws_registry(f: &mut Families, status: &crate::ws_registry::RegistryStatus) {
    let p = || labels([("pool", status.pool.as_str())]);
    f.gauge(
        "fulcrum_ws_registry_up",
        "1 when the WebSocket registry's last round trip to Redis succeeded.",
        p(),
        if status.up { 1.0 } else { 0.0 },
    );
    f.gauge(
        "fulcrum_ws_registry_connections",
        "Open WebSockets the registry holds (Redis holds the same once it answers and has caught up).",
        p(),
        status.connections as f64,
    );
    for (name, help, n) in [
        (
            "fulcrum_ws_registry_round_trips",
            "Pipelines sent to Redis by the registry's writer.",
            status.round_trips,
        ),
        (
            "fulcrum_ws_registry_errors",
            "Registry round trips that failed (Redis down, slow or refusing); connections are unaffected.",
            status.errors,
        ),
        (
            "fulcrum_ws_registry_queue_full",
            "Registry changes that found the writer's queue full (the writer then rewrites Redis from the open connections).",
            status.queue_full,
        ),
        (
            "fulcrum_ws_registry_rewrites",
            "Rewrites of Redis from the open connections after a failure or an overflow.",
            status.rewrites,
        ),
    ] {
        f.counter(name, help, p(), n);
    }
}

fn pools(f: &mut Families, sources: &Sources) {
    for pool in sources.pools.all() {
        if let Some(registry) = pool.ws_registry() {
            ws_registry(f, &registry.status());
        }
        let status = pool.status();
        let counters = pool.counters();
        let name = status.name.as_str();
        let p = || labels([("pool", name)]);
        for b in &status.backends {
            let addr = b.addr.to_string();
            let pb = || labels([("pool", name), ("backend", &addr)]);
            f.counter(
                "fulcrum_backend_requests",
                "Requests (L7) and connections (L4) sent to the backend, each attempt counted.",
                pb(),
                b.requests,
            );
            f.counter(
                "fulcrum_backend_failures",
                "Attempts that failed: connect failures, broken exchanges, timeouts, failure statuses.",
                pb(),
                b.failures,
            );
            f.gauge(
                "fulcrum_backend_in_flight",
                "Requests and connections in flight to the backend now.",
                pb(),
                b.in_flight as f64,
            );
            f.gauge(
                "fulcrum_backend_weight",
                "The backend's configured weight.",
                pb(),
                f64::from(b.weight),
            );
            f.gauge(
                "fulcrum_backend_effective_weight",
                "The weight the balancer uses now (slow start and failure decay applied; 0 out of rotation).",
                pb(),
                b.effective_weight,
            );
            for state in BACKEND_STATES {
                let mut with_state = pb();
                with_state.push(("state", state.name().to_string()));
                f.gauge(
                    "fulcrum_backend_state",
                    "1 for the state the backend is in, 0 for the others.",
                    with_state,
                    if b.state == state { 1.0 } else { 0.0 },
                );
            }
        }
        f.gauge(
            "fulcrum_pool_panic",
            "1 while the pool is in panic mode (so many backends fail their checks that the checks are ignored).",
            p(),
            if status.panic { 1.0 } else { 0.0 },
        );
        f.counter(
            "fulcrum_pool_circuit_breaker_refusals",
            "Requests answered 503 at once because the pool was at a circuit breaker's limit.",
            {
                let mut with_breaker = p();
                with_breaker.push(("breaker", "max_requests".to_string()));
                with_breaker
            },
            pool.breakers.refused_requests.load(Ordering::Relaxed),
        );
        f.gauge(
            "fulcrum_pool_requests_in_flight",
            "Requests in flight to the pool now, as max_requests counts them (0 without it).",
            p(),
            pool.breakers.requests() as f64,
        );
        let h = &counters.health;
        f.counter(
            "fulcrum_pool_panics",
            "Times the pool entered panic mode.",
            p(),
            h.panics,
        );
        for (reason, n) in [
            ("readiness", h.ejected_readiness),
            ("liveness", h.ejected_liveness),
            ("outlier", h.ejected_outlier),
        ] {
            let mut with_reason = p();
            with_reason.push(("reason", reason.to_string()));
            f.counter(
                "fulcrum_pool_ejections",
                "Backends taken out of rotation by checks: readiness (after the weight decayed), liveness (at once), outlier (timed).",
                with_reason,
                n,
            );
        }
        f.counter(
            "fulcrum_pool_ejections_suppressed",
            "Ejections the cap (max_ejection_percent) did not allow; the backend stayed in rotation.",
            p(),
            h.suppressed,
        );
        f.counter(
            "fulcrum_pool_flaps",
            "Backends ejected again within 5 minutes of coming back.",
            p(),
            h.flaps,
        );
        f.counter(
            "fulcrum_pool_slow_checks",
            "Readiness timeouts not counted as failures because live traffic to the backend was succeeding.",
            p(),
            h.slow_checks,
        );
        f.counter(
            "fulcrum_pool_false_positives",
            "Failing backends that recovered while their weight decayed, before removal: false positives the decay corrected.",
            p(),
            h.false_positives,
        );
        f.counter(
            "fulcrum_pool_slow_starts",
            "Backends that entered slow start.",
            p(),
            h.slow_starts,
        );
        f.counter(
            "fulcrum_pool_drains_started",
            "Drains started (admin, discovery, reload).",
            p(),
            h.drains,
        );
        f.counter(
            "fulcrum_pool_drains_completed",
            "Drains that ended with nothing in flight.",
            p(),
            counters.drains.completed,
        );
        f.counter(
            "fulcrum_pool_drains_timed_out",
            "Drains whose timeout passed with requests or connections still open.",
            p(),
            counters.drains.timed_out,
        );
        f.counter(
            "fulcrum_pool_drain_cut_requests",
            "Requests and connections closed because a drain timed out.",
            p(),
            counters.drain_cut,
        );
        if let Some(d) = &status.discovery {
            let ps = || labels([("pool", name), ("source", d.source)]);
            f.gauge(
                "fulcrum_discovery_connected",
                "1 while the pool's discovery source is connected.",
                ps(),
                if d.connected { 1.0 } else { 0.0 },
            );
            f.gauge(
                "fulcrum_discovery_stale_seconds",
                "How long the discovery source has been unreachable (0 while connected).",
                ps(),
                d.stale_seconds,
            );
            f.gauge(
                "fulcrum_discovery_backends",
                "Backends registered in the discovery store.",
                ps(),
                d.discovered as f64,
            );
            f.counter(
                "fulcrum_discovery_updates",
                "Lists and changes from the discovery store applied to the pool.",
                ps(),
                d.updates,
            );
            f.counter(
                "fulcrum_discovery_malformed",
                "Registrations skipped because their value could not be read.",
                ps(),
                d.malformed,
            );
            f.counter(
                "fulcrum_discovery_removals_held",
                "Removals held back by the blast-radius cap.",
                ps(),
                d.held,
            );
        }
    }
}

fn ha(f: &mut Families, sources: &Sources) {
    let Some(ha) = &sources.ha else {
        return;
    };
    let m = ha.metrics();
    f.gauge(
        "fulcrum_ha_active",
        "1 while this instance is the active one (serves the VIP); summed over a pair it must be 1.",
        labels([("mode", m.mode)]),
        if m.serving { 1.0 } else { 0.0 },
    );
    for role in ["standby", "elected", "active", "resigning"] {
        f.gauge(
            "fulcrum_ha_role",
            "1 for this instance's HA role, 0 for the others.",
            labels([("role", role)]),
            if m.role == role { 1.0 } else { 0.0 },
        );
    }
    f.gauge(
        "fulcrum_ha_epoch",
        "The election epoch this instance knows (it rises with every new active).",
        Vec::new(),
        m.epoch as f64,
    );
    f.counter(
        "fulcrum_ha_promotions",
        "Times this instance became active.",
        Vec::new(),
        m.promotions,
    );
    f.counter(
        "fulcrum_ha_demotions",
        "Times this instance stopped being active.",
        Vec::new(),
        m.demotions,
    );
    f.counter(
        "fulcrum_ha_holds",
        "Times the election store became unreachable for every instance and the role was held.",
        Vec::new(),
        m.holds,
    );
    f.gauge(
        "fulcrum_ha_hold",
        "1 while the role is held because the store is unreachable (failover unavailable).",
        Vec::new(),
        if m.holding { 1.0 } else { 0.0 },
    );
    f.histogram(
        "fulcrum_ha_failover_duration_seconds",
        "This instance's takeovers: from the active's last sign of life to serving.",
        Vec::new(),
        m.failovers,
    );
}

/// The prometheus-client collector over [`Sources`].
#[derive(Debug)]
pub struct Scrape(pub Sources);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in gather(&self.0) {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                match value {
                    // An info metric's labels are its value.
                    Value::Info => metric.encode_info(labels)?,
                    _ if labels.is_empty() => encode_value(&mut metric, value)?,
                    _ => encode_value(&mut metric.encode_family(labels)?, value)?,
                }
            }
        }
        Ok(())
    }
}

fn encode_value(sample: &mut MetricEncoder<'_>, value: &Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(n) => sample.encode_counter::<NoLabelSet, _, u64>(n, None),
        Value::Gauge(v) => sample.encode_gauge(v),
        Value::Histogram(h) => {
            sample.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)
        }
        Value::Info => Ok(()),
    }
}

/// Renders the scrape in `format`.
pub fn render(sources: &Sources, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(sources.clone())));
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, &registry)?;
    Ok(match format {
        Format::OpenMetrics => openmetrics,
        Format::Text => exposition::to_text(&openmetrics),
    })
}
