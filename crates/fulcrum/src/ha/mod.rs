//! High availability: the instance's role in an active-passive pair, and what follows from it.
//!
//! One `fulcrum-ha` thread runs a loop that owns the [`Node`] (the rules, in `fulcrum-core`):
//! every heartbeat it sends its report to the peers and applies the rules; store events
//! (from the election task) and peers' heartbeats feed the node as they arrive. Role changes
//! move the virtual IP, run the hooks and are published for the admin API and `/healthz`.

mod etcd;
mod garp;
pub mod heartbeat;
mod hooks;
mod status;
mod store;
mod succession;
mod vip;
mod zookeeper;

use std::net::UdpSocket as StdUdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fulcrum_core::config::{ActivePassive, ElectionStore, Ha as HaConfig, HaMode};
use fulcrum_core::ha::{Change, Node, Timing};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::pool::Clock;
use hooks::HookEnv;
pub use status::HaMetrics;
use store::{Claim, StoreCommand, StoreEvent, StoreLink};
pub use succession::{HandedHa, Handover, Inherit};
use vip::VirtualIp;

/// What the rest of fulcrum sees of HA: whether to serve, and a status for the admin API.
#[derive(Debug)]
pub struct HaShared {
    serving: AtomicBool,
    status: Mutex<Value>,
    metrics: Mutex<HaMetrics>,
    /// To the HA loop; taken by the first resignation or freeze (there is no second).
    control: Mutex<Option<mpsc::Sender<Control>>>,
}

/// What the rest of fulcrum asks of the HA loop.
#[derive(Debug)]
enum Control {
    /// Give the role up (shutdown); answered when done.
    Resign(std::sync::mpsc::Sender<()>),
    /// Stop acting and hand the role and the claim to a successor (binary upgrade).
    Freeze(std::sync::mpsc::Sender<Handover>),
}

impl HaShared {
    fn new(serving: bool, status: Value, metrics: HaMetrics) -> Self {
        Self {
            serving: AtomicBool::new(serving),
            status: Mutex::new(status),
            metrics: Mutex::new(metrics),
            control: Mutex::new(None),
        }
    }

    /// Whether this instance is the active one (always true in active-active mode).
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Value {
        self.status.lock().map(|s| s.clone()).unwrap_or(Value::Null)
    }

    /// What the metrics show: role, epoch, promotions, failover durations.
    pub fn metrics(&self) -> HaMetrics {
        self.metrics_mut().clone()
    }

    fn metrics_mut(&self) -> std::sync::MutexGuard<'_, HaMetrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, serving: bool, status: Value) {
        self.serving.store(serving, Ordering::Relaxed);
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    /// Graceful stop, step one: give up the role (release the store's claim, remove the VIP)
    /// so a standby takes over at once. Waits at most `limit`.
    pub fn resign(&self, limit: Duration) {
        let Some(control) = self.take_control() else {
            return;
        };
        let (done, wait) = std::sync::mpsc::channel();
        if control.try_send(Control::Resign(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }

    /// Binary upgrade, once the successor is ready: the HA loop stops acting (no renewal, no
    /// heartbeat, no release, the VIP left in place) and says what the successor takes over.
    /// `None` in active-active mode, or when the loop did not answer within `limit`. After
    /// this, [`resign`](Self::resign) does nothing: the role is the successor's.
    pub fn freeze(&self, limit: Duration) -> Option<Handover> {
        let control = self.take_control()?;
        let (reply, wait) = std::sync::mpsc::channel();
        control.try_send(Control::Freeze(reply)).ok()?;
        wait.recv_timeout(limit).ok()
    }

    fn take_control(&self) -> Option<mpsc::Sender<Control>> {
        self.control.lock().ok().and_then(|mut c| c.take())
    }
}

/// Starts HA as configured. The heartbeat socket and the VIP's interface are checked here, so
/// a mistake stops fulcrum before it serves anything.
/// `heartbeat_key`: the shared key read from `ha.heartbeat_key_file` (see `secrets`).
/// `inherit`: a binary upgrade's successor takes the predecessor's heartbeat socket, and its
/// role once the predecessor has frozen (see `succession`).
pub fn start(
    config: &HaConfig,
    heartbeat_key: Option<Vec<u8>>,
    clock: Clock,
    inherit: Option<Inherit>,
) -> Result<Started, String> {
    let pair = match &config.mode {
        HaMode::ActiveActive => {
            let shared = HaShared::new(
                true,
                json!({ "mode": "active_active", "node": config.node, "role": "active" }),
                HaMetrics::new("active_active", true),
            );
            return Ok(Started {
                shared: Arc::new(shared),
                thread: None,
                heartbeat_socket: None,
            });
        }
        HaMode::ActivePassive(pair) => (**pair).clone(),
    };
    let (inherited_socket, succession) = match inherit {
        Some(inherit) => (inherit.socket, Some(inherit.handover)),
        None => (None, None),
    };
    let socket = match inherited_socket {
        Some(socket) => socket,
        None => StdUdpSocket::bind(pair.heartbeat_bind).map_err(|e| {
            format!(
                "ha.heartbeat_bind: cannot bind {}: {e}",
                pair.heartbeat_bind
            )
        })?,
    };
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("ha.heartbeat_bind: {e}"))?;
    let heartbeat_socket = socket
        .try_clone()
        .map_err(|e| format!("ha.heartbeat_bind: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HA runtime: {e}"))?;
    let vip = match &pair.vip {
        Some(v) => Some(runtime.block_on(async {
            let vip = VirtualIp::new(v.clone(), pair.election.ttl)
                .map_err(|e| format!("ha.vip: cannot open netlink: {e}"))?;
            if succession.is_some() {
                // The predecessor may hold it and hands it over: only check the interface.
                vip.check().await.map_err(|e| format!("ha.vip: {e}"))?;
            } else {
                // Checks the interface exists; a leftover address from a killed run goes too.
                vip.remove().await.map_err(|e| format!("ha.vip: {e}"))?;
            }
            Ok::<_, String>(vip)
        })?),
        None => None,
    };
    let others = pair
        .peers
        .iter()
        .filter(|p| !is_self(p, pair.heartbeat_bind))
        .count();
    let status = match succession {
        Some(_) => json!({ "mode": "active_passive", "node": config.node, "role": "taking_over" }),
        None => Value::Null,
    };
    let shared = Arc::new(HaShared::new(
        false,
        status,
        HaMetrics::new("active_passive", false),
    ));
    let (control_tx, control_rx) = mpsc::channel(1);
    if let Ok(mut slot) = shared.control.lock() {
        *slot = Some(control_tx);
    }
    let group = match &pair.election.store {
        ElectionStore::Etcd { key, .. } => key.clone(),
        ElectionStore::ZooKeeper { path, .. } => path.clone(),
    };
    let heartbeats = heartbeat::Heartbeats::new(&group, &pair.peers, heartbeat_key);
    let timing = Timing {
        ttl: pair.election.ttl,
        heartbeat: pair.heartbeat,
    };
    let name = config.node.clone();
    let loop_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("fulcrum-ha".into())
        .spawn(move || {
            runtime.block_on(async move {
                let (node, clock, claim) = match succession {
                    None => (Node::new(name, timing, clock.now()), clock, Claim::None),
                    Some(handover) => {
                        succession::take_over(handover, name, timing, clock, vip.as_ref()).await
                    }
                };
                let mut ha = HaLoop {
                    node: node.with_group_peers(others),
                    pair,
                    heartbeats,
                    clock,
                    shared: loop_shared,
                    vip,
                    leader: None,
                    store_error: None,
                    announcing: None,
                    last_refresh: Duration::ZERO,
                    holding: false,
                };
                ha.publish();
                match UdpSocket::from_std(socket) {
                    Ok(socket) => ha.run(socket, control_rx, claim).await,
                    Err(e) => tracing::error!(error = %e, "heartbeat socket unusable"),
                }
            })
        })
        .map_err(|e| format!("cannot start the HA thread: {e}"))?;
    Ok(Started {
        shared,
        thread: Some(thread),
        heartbeat_socket: Some(heartbeat_socket),
    })
}

/// HA, started.
#[derive(Debug)]
pub struct Started {
    pub shared: Arc<HaShared>,
    /// The HA loop's thread (none in active-active mode).
    pub thread: Option<JoinHandle<()>>,
    /// A copy of the heartbeat socket, for a binary upgrade to hand over.
    pub heartbeat_socket: Option<StdUdpSocket>,
}

struct HaLoop {
    node: Node,
    pair: ActivePassive,
    heartbeats: heartbeat::Heartbeats,
    clock: Clock,
    shared: Arc<HaShared>,
    vip: Option<VirtualIp>,
    /// The leader as the store last named it.
    leader: Option<(String, u64)>,
    store_error: Option<String>,
    announcing: Option<tokio::task::JoinHandle<()>>,
    last_refresh: Duration,
    /// Whether the last loop saw the node holding (to log the start and end once).
    holding: bool,
}

impl HaLoop {
    async fn run(&mut self, socket: UdpSocket, mut control: mpsc::Receiver<Control>, claim: Claim) {
        let (events_tx, mut events) = mpsc::channel(64);
        let (commands, commands_rx) = mpsc::channel(8);
        let (may_campaign, may_campaign_rx) = watch::channel(true);
        let link = StoreLink {
            clock: self.clock,
            events: events_tx,
            commands: commands_rx,
            may_campaign: may_campaign_rx,
        };
        match &self.pair.election.store {
            ElectionStore::Etcd { endpoints, key } => {
                let election = etcd::EtcdElection {
                    endpoints: endpoints.clone(),
                    key: key.clone(),
                    node: self.node.name().to_string(),
                    ttl: self.pair.election.ttl,
                    heartbeat: self.pair.heartbeat,
                    inherited: match &claim {
                        Claim::EtcdLease { id } => Some(*id),
                        _ => None,
                    },
                };
                tokio::spawn(election.run(link));
            }
            ElectionStore::ZooKeeper { servers, path } => {
                let election = zookeeper::ZooKeeperElection {
                    servers: servers.clone(),
                    path: path.clone(),
                    node: self.node.name().to_string(),
                    ttl: self.pair.election.ttl,
                    heartbeat: self.pair.heartbeat,
                    inherited: match &claim {
                        Claim::ZooKeeperZnode { name } => Some(name.clone()),
                        _ => None,
                    },
                };
                tokio::spawn(election.run(link));
            }
        }
        if self.node.serving() {
            // Taken over while active: the address is still on the interface; renew its
            // lifetime at once (no announcement: it did not move).
            self.refresh_vip(self.clock.now()).await;
        }
        tracing::info!(
            node = %self.node.name(),
            ttl = ?self.pair.election.ttl,
            heartbeat = ?self.pair.heartbeat,
            "HA: standing by; campaigning when the store has no leader"
        );
        let mut ticker = tokio::time::interval(self.pair.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 2048];
        loop {
            let now = tokio::select! {
                _ = ticker.tick() => {
                    self.send_heartbeats(&socket).await;
                    self.clock.now()
                }
                received = socket.recv_from(&mut buf) => {
                    let now = self.clock.now();
                    if let Ok((n, from)) = received {
                        match self.heartbeats.decode(&buf[..n], from) {
                            Ok(report) => self.node.heard(report, now),
                            Err(e) => tracing::debug!(error = %e, "ignored datagram"),
                        }
                    }
                    now
                }
                Some(event) = events.recv() => {
                    let now = self.clock.now();
                    if let Some(change) = self.store_event(event, now) {
                        self.act(change, &commands).await;
                        self.send_heartbeats(&socket).await;
                    }
                    now
                }
                Some(asked) = control.recv() => match asked {
                    Control::Resign(done) => {
                        self.resign(&socket, &commands, &mut events).await;
                        let _ = done.send(());
                        return;
                    }
                    Control::Freeze(reply) => {
                        let handover = self.freeze(&socket, &commands, &mut events).await;
                        let _ = reply.send(handover);
                        // Never returns: the store task may keep the claim's session open
                        // for the successor until this process ends.
                        std::future::pending::<()>().await;
                        return;
                    }
                },
            };
            let before = self.node.role();
            if let Some(change) = self.node.tick(now) {
                self.act(change, &commands).await;
            }
            may_campaign.send_if_modified(|allowed| {
                // A claiming instance may always claim again (its lease or session lapsed
                // while the store was away); a standby only while no active is heard.
                let now_allowed = self.node.may_campaign(now) || self.node.role().claims();
                std::mem::replace(allowed, now_allowed) != now_allowed
            });
            if self.node.role() != before {
                self.send_heartbeats(&socket).await;
            }
            if self.node.serving()
                && now.saturating_sub(self.last_refresh) >= self.node.timing().renew_every()
            {
                self.refresh_vip(now).await;
            }
            self.log_hold();
            self.publish();
        }
    }

    fn log_hold(&mut self) {
        let holding = self.node.hold().is_some();
        if holding == self.holding {
            return;
        }
        self.holding = holding;
        if holding {
            tracing::error!(
                epoch = self.node.epoch(),
                "HA: the store is unreachable for every instance: keeping the active role and the VIP; failover is unavailable until the store returns"
            );
        } else if self.node.serving() {
            tracing::info!(
                epoch = self.node.epoch(),
                "HA: the store is back; renewing again"
            );
        }
    }

    fn store_event(&mut self, event: StoreEvent, now: Duration) -> Option<Change> {
        match event {
            StoreEvent::Reached { started, leader } => {
                self.store_error = None;
                self.leader = leader;
                self.node.store_ok(started);
                None
            }
            StoreEvent::Failed { error } => {
                if self.store_error.as_ref() != Some(&error) {
                    tracing::warn!(error = %error, role = %self.node.role(), "HA: store unreachable");
                }
                self.store_error = Some(error);
                self.node.store_failed(now);
                None
            }
            StoreEvent::Won { epoch, started } => {
                self.store_error = None;
                self.leader = Some((self.node.name().to_string(), epoch));
                tracing::info!(epoch, "HA: won the election in the store");
                self.node.won(epoch, started, now);
                None
            }
            StoreEvent::Renewed { started } => {
                self.store_error = None;
                self.node.renewed(started);
                None
            }
            StoreEvent::Lost { why } => {
                self.leader = None;
                self.node.lost(now, &why)
            }
            StoreEvent::Resigned => None,
        }
    }

    async fn act(&mut self, change: Change, commands: &mpsc::Sender<StoreCommand>) {
        match change {
            Change::Promoted { epoch, failover } => {
                tracing::info!(
                    epoch,
                    failover_ms = failover.map(|d| d.as_millis() as u64),
                    "HA: promoted to active"
                );
                if let Some(vip) = &self.vip {
                    if let Err(e) = vip.add_or_refresh().await {
                        tracing::error!(error = %e, "HA: cannot take the virtual IP; stepping down");
                        let now = self.clock.now();
                        if let Some(change) = self.node.abdicate(now, &e) {
                            Box::pin(self.act(change, commands)).await;
                        }
                        return;
                    }
                    self.last_refresh = self.clock.now();
                    tracing::info!(vip = %vip.address(), "HA: virtual IP added");
                    let announcer = vip.clone();
                    self.announcing = Some(tokio::spawn(async move {
                        if let Err(e) = announcer.announce().await {
                            tracing::warn!(error = %e, "HA: gratuitous ARP failed");
                        }
                    }));
                }
                self.hook(true, epoch, "promoted");
            }
            Change::Demoted { epoch, reason } => {
                tracing::warn!(epoch, reason = %reason, "HA: demoted; no longer serving");
                if let Some(task) = self.announcing.take() {
                    task.abort();
                }
                if let Some(vip) = &self.vip {
                    match vip.remove().await {
                        Ok(()) => tracing::info!(vip = %vip.address(), "HA: virtual IP removed"),
                        Err(e) => {
                            tracing::error!(error = %e, "HA: cannot remove the virtual IP (its lifetime ends it)")
                        }
                    }
                }
                let _ = commands.try_send(StoreCommand::StepDown);
                self.hook(false, epoch, &reason);
            }
        }
    }

    async fn refresh_vip(&mut self, now: Duration) {
        self.last_refresh = now;
        if let Some(vip) = &self.vip {
            if let Err(e) = vip.add_or_refresh().await {
                tracing::error!(error = %e, "HA: cannot refresh the virtual IP");
            }
        }
    }

    /// Runs `on_promote` (`promoted`) or `on_demote` with the role change in the environment.
    fn hook(&self, promoted: bool, epoch: u64, reason: &str) {
        let (which, command, role) = if promoted {
            ("on_promote", &self.pair.on_promote, "active")
        } else {
            ("on_demote", &self.pair.on_demote, "standby")
        };
        hooks::run(
            which,
            command,
            &HookEnv {
                node: self.node.name(),
                role,
                epoch,
                reason,
            },
        );
    }

    async fn send_heartbeats(&mut self, socket: &UdpSocket) {
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let report = self.node.report(self.clock.now());
        let datagram = self.heartbeats.encode(&report, now_micros);
        for peer in &self.pair.peers {
            // Loss is what heartbeats are for: a failed send is a missed beat, not an error.
            let _ = socket.send_to(&datagram, peer).await;
        }
    }

    async fn resign(
        &mut self,
        socket: &UdpSocket,
        commands: &mpsc::Sender<StoreCommand>,
        events: &mut mpsc::Receiver<StoreEvent>,
    ) {
        let now = self.clock.now();
        let was = self.node.role();
        let change = self.node.resign(now);
        if let Some(Change::Demoted { epoch, reason }) = change {
            if let Some(task) = self.announcing.take() {
                task.abort();
            }
            if let Some(vip) = &self.vip {
                if let Err(e) = vip.remove().await {
                    tracing::error!(error = %e, "HA: cannot remove the virtual IP");
                }
            }
            self.hook(false, epoch, &reason);
        }
        self.publish();
        // Tell the peers first (they may take over as soon as the store agrees), then release.
        self.send_heartbeats(socket).await;
        let _ = commands.send(StoreCommand::Resign).await;
        let limit = self.node.timing().ttl;
        let _ = tokio::time::timeout(limit, async {
            while let Some(event) = events.recv().await {
                if matches!(event, StoreEvent::Resigned) {
                    return;
                }
            }
        })
        .await;
        self.send_heartbeats(socket).await;
        tracing::info!(was = %was, "HA: resigned");
    }
}

/// Whether a configured peer address is this instance's own heartbeat address (the same list
/// may serve every instance): its port is ours and its IP is on this host.
fn is_self(peer: &std::net::SocketAddr, bind: std::net::SocketAddr) -> bool {
    peer.port() == bind.port() && StdUdpSocket::bind((peer.ip(), 0)).is_ok()
}

/// Addresses that must be bindable before this instance owns them (the VIP).
pub fn freebind_addresses(config: Option<&HaConfig>) -> Vec<std::net::IpAddr> {
    match config.map(|c| &c.mode) {
        Some(HaMode::ActivePassive(pair)) => pair
            .vip
            .iter()
            .map(|v| std::net::IpAddr::V4(v.address))
            .collect(),
        _ => Vec::new(),
    }
}
