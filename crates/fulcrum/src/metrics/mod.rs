//! Prometheus metrics: what fulcrum has done and is doing, for the SLOs an operator pages
//! on — routing latency, errors by side, health-check accuracy, drains, discovery, failover.
//!
//! The request path writes per-worker shards ([`cell`], [`series`]); everything else is read
//! from the state the admin API already shows, at scrape time ([`collect`]). The scrape is
//! rendered by prometheus-client as OpenMetrics and, for scrapers that do not ask for
//! OpenMetrics, as the Prometheus text format 0.0.4 ([`exposition`]).

pub mod cell;
pub mod collect;
pub mod exposition;
pub mod series;
