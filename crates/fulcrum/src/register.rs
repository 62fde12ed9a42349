//! `fulcrum register`: a sidecar that keeps one backend registered in etcd or ZooKeeper while
//! it is healthy. It holds a lease (etcd) or a session (ZooKeeper) of `--ttl`, renews it,
//! withdraws the registration while the optional `--check` URL fails, and deregisters on
//! SIGTERM or Ctrl-C, so a deploy that stops the sidecar first drops nothing. If the process
//! dies, the lease or session expires after the TTL and fulcrum drains the backend.

use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use fulcrum_core::config::{HttpCheck, StatusRange, UpstreamProtocol};
use fulcrum_core::health::ProbeOutcome;

use crate::discovery::{etcd::connect_options, registration, BACKOFF};
use crate::health::probe;
use crate::telemetry;

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// etcd endpoints, comma-separated (HOST:PORT).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "zookeeper",
        required_unless_present = "zookeeper",
        requires = "prefix"
    )]
    pub etcd: Vec<String>,
    /// The pool's etcd prefix, as in its `discovery.prefix`.
    #[arg(long)]
    pub prefix: Option<String>,
    /// ZooKeeper servers (HOST:PORT[,HOST:PORT…]).
    #[arg(long, requires = "path")]
    pub zookeeper: Option<String>,
    /// The pool's znode, as in its `discovery.path`.
    #[arg(long)]
    pub path: Option<String>,
    /// The backend's address as clients of fulcrum should reach it.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The weight fulcrum gives the backend (1 to 10000).
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// Lease time to live: how long a dead sidecar's registration survives it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub ttl: Duration,
    /// Withdraw the registration while this URL does not answer 2xx or 3xx
    /// (http://HOST:PORT/PATH).
    #[arg(long)]
    pub check: Option<String>,
}

pub fn run(args: &RegisterArgs) -> Result<(), String> {
    if args.ttl < Duration::from_secs(1) {
        return Err("--ttl must be at least 1s (etcd leases count whole seconds)".into());
    }
    let check = args.check.as_deref().map(parse_check).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let stop = telemetry::shutdown_signal();
        tokio::pin!(stop);
        let mut backoff = BACKOFF.0;
        loop {
            // Set by a session once the backend is in the store, so a failure says what it cost.
            let mut was_registered = false;
            let result = match (&args.zookeeper, &args.path, &args.prefix) {
                (Some(servers), Some(path), _) => {
                    let registered = &mut was_registered;
                    zookeeper_session(args, servers, path, check.as_ref(), &mut stop, registered)
                        .await
                }
                (_, _, Some(prefix)) => {
                    session(args, prefix, check.as_ref(), &mut stop, &mut was_registered).await
                }
                _ => return Err("give --etcd with --prefix, or --zookeeper with --path".into()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if was_registered => {
                    tracing::warn!(error = %e, "registration lost; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "cannot register yet; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut stop => return Ok(()),
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    })
}

/// One lease's life. Returns `Ok` after a clean deregistration on a stop signal.
async fn session(
    args: &RegisterArgs,
    prefix: &str,
    check: Option<&(SocketAddr, HttpCheck)>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    was_registered: &mut bool,
) -> Result<(), String> {
    let key = format!("{prefix}{}", args.addr);
    let value = registration::encode(args.addr, args.weight);
    let mut client = Client::connect(&args.etcd, Some(connect_options()))
        .await
        .map_err(|e| format!("cannot connect to etcd: {e}"))?;
    let lease = client
        .lease_grant(args.ttl.as_secs() as i64, None)
        .await
        .map_err(|e| format!("cannot get a lease: {e}"))?
        .id();
    let (mut keeper, mut renewals) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("cannot keep the lease alive: {e}"))?;
    let mut registered = false;
    let mut tick = tokio::time::interval(args.ttl / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut *stop => {
                if registered {
                    let _ = client.delete(key.as_str(), None).await;
                }
                let _ = client.lease_revoke(lease).await;
                tracing::info!(%key, "deregistered");
                return Ok(());
            }
        }
        keeper
            .keep_alive()
            .await
            .map_err(|e| format!("lease renewal failed: {e}"))?;
        match renewals.message().await {
            Ok(Some(r)) if r.ttl() > 0 => {}
            Ok(_) => return Err("the lease expired".into()),
            Err(e) => return Err(format!("lease renewal failed: {e}")),
        }
        let healthy = match check {
            None => true,
            Some((addr, check)) => {
                probe::http(*addr, check, args.ttl / 3, None, UpstreamProtocol::Http1)
                    .await
                    .outcome
                    == ProbeOutcome::Pass
            }
        };
        if healthy && !registered {
            client
                .put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| format!("cannot register: {e}"))?;
            registered = true;
            *was_registered = true;
            tracing::info!(%key, ttl = ?args.ttl, "registered");
        } else if !healthy && registered {
            client
                .delete(key.as_str(), None)
                .await
                .map_err(|e| format!("cannot withdraw: {e}"))?;
            registered = false;
            tracing::warn!(%key, "check failing; registration withdrawn");
        }
    }
}

async fn passes(check: Option<&(SocketAddr, HttpCheck)>, ttl: Duration) -> bool {
    match check {
        None => true,
        Some((addr, check)) => {
            probe::http(*addr, check, ttl / 3, None, UpstreamProtocol::Http1)
                .await
                .outcome
                == ProbeOutcome::Pass
        }
    }
}

/// One ZooKeeper session's life: an ephemeral node `<path>/<addr>` that lives as long as the
/// session (timeout `--ttl`). Returns `Ok` after a clean deregistration on a stop signal.
async fn zookeeper_session(
    args: &RegisterArgs,
    servers: &str,
    path: &str,
    check: Option<&(SocketAddr, HttpCheck)>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    was_registered: &mut bool,
) -> Result<(), String> {
    use zookeeper_client::{Acls, CreateMode};
    let client = crate::discovery::zookeeper::connect(servers, args.ttl).await?;
    let parent = path.trim_end_matches('/');
    if !parent.is_empty() {
        client
            .mkdir(
                parent,
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .map_err(|e| format!("cannot create {parent}: {e}"))?;
    }
    let node = format!("{parent}/{}", args.addr);
    let value = registration::encode(args.addr, args.weight);
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let mut registered = false;
    let mut tick = tokio::time::interval(args.ttl / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut *stop => {
                if registered {
                    let _ = client.delete(&node, None).await;
                }
                tracing::info!(%node, "deregistered");
                return Ok(());
            }
        }
        if client.state().is_terminated() {
            return Err(format!("zookeeper session {:?}", client.state()));
        }
        let healthy = passes(check, args.ttl).await;
        if healthy && !registered {
            match client.create(&node, value.as_bytes(), &ephemeral).await {
                Ok(_) => {}
                // Left by an earlier session that has not expired yet: replace it.
                Err(zookeeper_client::Error::NodeExists) => {
                    let _ = client.delete(&node, None).await;
                    client
                        .create(&node, value.as_bytes(), &ephemeral)
                        .await
                        .map_err(|e| format!("cannot register: {e}"))?;
                }
                Err(e) => return Err(format!("cannot register: {e}")),
            }
            registered = true;
            *was_registered = true;
            tracing::info!(%node, ttl = ?args.ttl, "registered");
        } else if !healthy && registered {
            client
                .delete(&node, None)
                .await
                .map_err(|e| format!("cannot withdraw: {e}"))?;
            registered = false;
            tracing::warn!(%node, "check failing; registration withdrawn");
        }
    }
}

/// `http://HOST:PORT/PATH` → the address to probe and the check to run.
fn parse_check(url: &str) -> Result<(SocketAddr, HttpCheck), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--check {url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse()
        .map_err(|_| format!("--check {url}: the host must be IP:PORT"))?;
    Ok((
        addr,
        HttpCheck {
            path: path.to_string(),
            expect: StatusRange {
                low: 200,
                high: 399,
            },
            host: None,
        },
    ))
}
