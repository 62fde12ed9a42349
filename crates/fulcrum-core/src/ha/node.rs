//! One instance's role in an active-passive group, decided from what the store and the peers
//! said and when. Time is an argument, so every rule is tested exactly; `LIFECYCLE.md` beside
//! this file draws the states and says why each rule keeps two actives from ever coexisting.

use std::collections::{BTreeMap, VecDeque};

/// Most peers a node keeps reports of (groups are a handful of instances).
pub const MAX_PEERS: usize = 64;
/// A peer silent for this many peer timeouts is forgotten.
const PEER_FORGET_FACTOR: u32 = 10;
use std::fmt;
use std::time::Duration;

use super::Timing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not serving; campaigns whenever the store has no leader.
    Standby,
    /// Holds the claim in the store but waits until no peer still claims to be active.
    Elected,
    /// Holds the claim and serves (owns the virtual IP).
    Active,
    /// Shutting down: gave up the claim, serves nothing new.
    Resigning,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Elected => "elected",
            Role::Active => "active",
            Role::Resigning => "resigning",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Standby, Role::Elected, Role::Active, Role::Resigning]
            .into_iter()
            .find(|r| r.name() == text)
    }

    /// Elected or active: holds the claim in the store.
    pub fn claims(self) -> bool {
        matches!(self, Role::Elected | Role::Active)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one instance tells the others in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub node: String,
    pub role: Role,
    /// The epoch of the sender's claim (0 without one).
    pub epoch: u64,
    /// Since the sender's last successful store round trip started; `None`: never.
    pub store_ok_ago: Option<Duration>,
    /// The epoch of the last active the sender heard (0: none yet), and how long ago.
    pub hears_active: u64,
    pub heard_active_ago: Option<Duration>,
}

/// A peer as last heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    pub epoch: u64,
    pub heard_at: Duration,
    /// When the peer's last successful store round trip started, on our clock.
    pub store_ok_at: Option<Duration>,
    /// The epoch of the last active the peer heard (0: none), and when, on our clock.
    pub hears_active: u64,
    pub heard_active_at: Option<Duration>,
}

/// A role change for the caller to act on (move the VIP, run hooks, log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Promoted {
        epoch: u64,
        /// Since an active peer was last heard, when one was (the failover as seen here).
        failover: Option<Duration>,
    },
    Demoted {
        epoch: u64,
        reason: String,
    },
}

/// One entry of the failover history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Duration,
    pub from: Role,
    pub to: Role,
    pub epoch: u64,
    pub reason: String,
    pub failover: Option<Duration>,
}

/// Set while the active keeps serving although it cannot confirm its claim, because no peer
/// reaches the store either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub since: Duration,
    /// Set once a peer reaches the store again: renew by then or step down.
    pub rejoin_by: Option<Duration>,
}

const HISTORY: usize = 32;

/// What an instance hands its successor in a binary upgrade: its role and claim, with every
/// moment given as an age (the successor is another process with another clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Succession {
    /// Standby, elected or active: a resigning instance is not upgraded.
    pub role: Role,
    pub epoch: u64,
    pub tenure_epoch: u64,
    /// Since the start of the last confirmed renewal of the claim.
    pub confirmed_ago: Option<Duration>,
    /// Since the start of the last successful store round trip.
    pub store_ok_ago: Option<Duration>,
}

impl Succession {
    /// The oldest moment the successor must place on its clock.
    pub fn oldest(&self) -> Duration {
        self.confirmed_ago
            .into_iter()
            .chain(self.store_ok_ago)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    timing: Timing,
    role: Role,
    epoch: u64,
    /// The epoch this instance's current claim began with. An active that re-claims a lapsed
    /// key moves to a newer epoch; peers hearing any epoch of the tenure hear this instance.
    tenure_epoch: u64,
    since: Duration,
    confirmed_at: Option<Duration>,
    store_ok_at: Option<Duration>,
    store_failed_at: Option<Duration>,
    hold: Option<Hold>,
    peers: BTreeMap<String, Peer>,
    /// The last heartbeat from a peer claiming to be active: its epoch and when.
    last_active: Option<(u64, Duration)>,
    history: VecDeque<Transition>,
    promotions: u64,
    demotions: u64,
    /// How many other instances the group has (from the configured peers): a hold needs to
    /// hear them all.
    group_peers: usize,
}

impl Node {
    pub fn new(name: impl Into<String>, timing: Timing, now: Duration) -> Self {
        Self {
            name: name.into(),
            timing,
            role: Role::Standby,
            epoch: 0,
            tenure_epoch: 0,
            since: now,
            confirmed_at: None,
            store_ok_at: None,
            store_failed_at: None,
            hold: None,
            peers: BTreeMap::new(),
            last_active: None,
            history: VecDeque::new(),
            promotions: 0,
            demotions: 0,
            group_peers: 0,
        }
    }

    /// The successor of an instance that handed its role over (a binary upgrade): the same
    /// name, role, epoch and claim, so neither the store nor the peers see a change. Every age
    /// is taken `in_transit` older than the predecessor said (the time the succession took
    /// to arrive), so the successor never trusts the claim longer than its predecessor would
    /// have. A moment older than this clock's origin counts as never (the caller gives the
    /// node a clock that starts early enough, see [`Succession::oldest`]).
    pub fn succeed(
        name: impl Into<String>,
        timing: Timing,
        now: Duration,
        from: &Succession,
        in_transit: Duration,
    ) -> Self {
        let mut node = Node::new(name, timing, now);
        let at = |ago: Option<Duration>| ago.and_then(|a| now.checked_sub(a + in_transit));
        node.store_ok_at = at(from.store_ok_ago);
        if from.role.claims() {
            node.role = from.role;
            node.epoch = from.epoch;
            node.tenure_epoch = from.tenure_epoch.min(from.epoch);
            node.confirmed_at = at(from.confirmed_ago);
        }
        node.history.push_back(Transition {
            at: now,
            from: node.role,
            to: node.role,
            epoch: node.epoch,
            reason: "taken over from the previous process (binary upgrade)".into(),
            failover: None,
        });
        node
    }

    /// What to hand a successor now (see [`Node::succeed`]).
    pub fn succession(&self, now: Duration) -> Succession {
        let ago = |t: Option<Duration>| t.map(|t| now.saturating_sub(t));
        let claims = self.role.claims();
        Succession {
            role: if claims { self.role } else { Role::Standby },
            epoch: if claims { self.epoch } else { 0 },
            tenure_epoch: if claims { self.tenure_epoch } else { 0 },
            confirmed_ago: if claims { ago(self.confirmed_at) } else { None },
            store_ok_ago: ago(self.store_ok_at),
        }
    }

    /// Sets how many other instances the group has. Without it only the peers heard so far
    /// count, and a peer never heard cannot stop a hold.
    pub fn with_group_peers(mut self, others: usize) -> Self {
        self.group_peers = others;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn since(&self) -> Duration {
        self.since
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Whether this instance should serve (own the VIP, answer `/healthz` with 200).
    pub fn serving(&self) -> bool {
        self.role == Role::Active
    }

    pub fn hold(&self) -> Option<Hold> {
        self.hold
    }

    pub fn confirmed_at(&self) -> Option<Duration> {
        self.confirmed_at
    }

    pub fn store_ok_at(&self) -> Option<Duration> {
        self.store_ok_at
    }

    /// Whether the last store round trip failed (and none succeeded since it started).
    pub fn store_failing(&self) -> bool {
        match (self.store_failed_at, self.store_ok_at) {
            (Some(failed), Some(ok)) => failed > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// Times this instance became active, and stopped being active or elected.
    pub fn promotions(&self) -> u64 {
        self.promotions
    }

    pub fn demotions(&self) -> u64 {
        self.demotions
    }

    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }

    /// What to tell the peers now.
    pub fn report(&self, now: Duration) -> Report {
        Report {
            node: self.name.clone(),
            role: self.role,
            epoch: if self.role.claims() { self.epoch } else { 0 },
            store_ok_ago: self.store_ok_at.map(|t| now.saturating_sub(t)),
            hears_active: self.last_active.map_or(0, |(epoch, _)| epoch),
            heard_active_ago: self.last_active.map(|(_, at)| now.saturating_sub(at)),
        }
    }

    /// A store round trip that started at `started` succeeded.
    pub fn store_ok(&mut self, started: Duration) {
        self.store_ok_at = Some(self.store_ok_at.map_or(started, |t| t.max(started)));
    }

    pub fn store_failed(&mut self, now: Duration) {
        self.store_failed_at = Some(now);
    }

    /// The store accepted our claim with this epoch (the round trip started at `started`).
    ///
    /// A claiming instance that wins again (its lease expired while the store was paused, and
    /// it re-claimed the free key before anybody else) keeps its role under the new epoch:
    /// nobody else held the claim in between, or this transaction would have failed.
    pub fn won(&mut self, epoch: u64, started: Duration, now: Duration) {
        self.store_ok(started);
        if self.role.claims() && epoch > self.epoch {
            self.epoch = epoch;
            self.confirmed_at = Some(started);
            return;
        }
        if self.role != Role::Standby {
            return;
        }
        self.epoch = epoch;
        self.tenure_epoch = epoch;
        self.confirmed_at = Some(started);
        self.transition(now, Role::Elected, "won the election in the store", None);
    }

    /// The store confirmed our claim in a round trip that started at `started`.
    pub fn renewed(&mut self, started: Duration) {
        self.store_ok(started);
        if self.role.claims() {
            self.confirmed_at = Some(self.confirmed_at.map_or(started, |t| t.max(started)));
        }
    }

    /// The store says our claim is gone (lease expired, node deleted).
    pub fn lost(&mut self, now: Duration, why: &str) -> Option<Change> {
        self.store_ok(now);
        self.demote(now, format!("the store no longer holds our claim: {why}"))
    }

    /// A heartbeat arrived. Reports from ourselves (our own address in `peers`) are ignored.
    pub fn heard(&mut self, report: Report, now: Duration) {
        if report.node == self.name {
            return;
        }
        // Bounded: peers silent for long are forgotten, and a sender that keeps inventing
        // names cannot grow the map past a fixed size.
        let forget_after = self
            .timing
            .peer_timeout()
            .saturating_mul(PEER_FORGET_FACTOR);
        self.peers
            .retain(|_, p| now.saturating_sub(p.heard_at) <= forget_after);
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&report.node) {
            return;
        }
        if report.role == Role::Active {
            self.last_active = Some((report.epoch, now));
        }
        self.peers.insert(
            report.node,
            Peer {
                role: report.role,
                epoch: report.epoch,
                heard_at: now,
                store_ok_at: report.store_ok_ago.map(|ago| now.saturating_sub(ago)),
                hears_active: report.hears_active,
                heard_active_at: report.heard_active_ago.map(|ago| now.saturating_sub(ago)),
            },
        );
    }

    /// Gives up the role because this instance cannot serve (its VIP could not be added).
    pub fn abdicate(&mut self, now: Duration, why: &str) -> Option<Change> {
        self.demote(now, format!("cannot serve: {why}"))
    }

    /// Whether a standby may campaign: not while a peer is heard claiming the active role.
    /// The store's key decides who leads; this keeps a standby from grabbing a key that a live
    /// active lost only because the store itself paused (its leases ran out meanwhile).
    ///
    /// "Not heard" means silent for the peer timeout plus two heartbeats: an active that
    /// still hears us learns from our reports that we no longer hear it, and steps down from
    /// a hold before we can win (rule 5 in LIFECYCLE.md).
    pub fn may_campaign(&self, now: Duration) -> bool {
        // A peer whose latest report says it stepped down (standby, resigning) releases us
        // at once; a silent one only after the quiet period.
        let quiet = self.timing.peer_timeout() + self.timing.heartbeat * 2;
        self.role == Role::Standby
            && !self
                .peers
                .values()
                .any(|p| p.role == Role::Active && now.saturating_sub(p.heard_at) <= quiet)
    }

    /// Graceful stop: give up the role before anything else, so a standby takes over at once.
    pub fn resign(&mut self, now: Duration) -> Option<Change> {
        let change = self.role.claims().then(|| Change::Demoted {
            epoch: self.epoch,
            reason: "resigned for shutdown".into(),
        });
        self.transition(now, Role::Resigning, "resigned for shutdown", None);
        change
    }

    /// Applies the rules at `now`; returns the role change to act on, if any.
    pub fn tick(&mut self, now: Duration) -> Option<Change> {
        match self.role {
            Role::Standby | Role::Resigning => None,
            Role::Elected => self.tick_elected(now),
            Role::Active => self.tick_active(now),
        }
    }

    fn tick_elected(&mut self, now: Duration) -> Option<Change> {
        if let Some(reason) = self.newer_claim(now) {
            return self.demote(now, reason);
        }
        if !self.confirmed(now) {
            return self.demote(now, "could not confirm the claim after winning it".into());
        }
        let still_active = self
            .fresh_peers(now)
            .find(|(_, p)| p.role == Role::Active)
            .map(|(name, _)| name.clone());
        if still_active.is_some() {
            // Wait: the old active steps down when it hears our newer epoch, or falls silent.
            return None;
        }
        let failover = self.last_active.map(|(_, t)| now.saturating_sub(t));
        self.transition(
            now,
            Role::Active,
            "elected and no other active heard",
            failover,
        );
        Some(Change::Promoted {
            epoch: self.epoch,
            failover,
        })
    }

    fn tick_active(&mut self, now: Duration) -> Option<Change> {
        if let Some(reason) = self.newer_claim(now) {
            return self.demote(now, reason);
        }
        if self.confirmed(now) {
            self.hold = None;
            return None;
        }
        let unconfirmed = self
            .confirmed_at
            .map_or(Duration::ZERO, |t| now.saturating_sub(t));
        let fresh = self.fresh_peers(now).count();
        if fresh == 0 {
            return self.demote(
                now,
                format!(
                    "isolated: no store confirmation for {} and no peer heard",
                    millis(unconfirmed)
                ),
            );
        }
        let reacher = self
            .fresh_peers(now)
            .find(|(_, p)| {
                p.store_ok_at
                    .is_some_and(|t| now.saturating_sub(t) <= self.timing.store_fresh())
            })
            .map(|(name, _)| name.clone());
        // "The store is down for everybody" holds only if we hear everybody and everybody
        // hears us: a peer we once heard and now do not may be the one that reaches the store
        // (and will win it); a peer that does not hear us will campaign when it can.
        let silent = self
            .peers
            .iter()
            .find(|(_, p)| {
                p.role != Role::Resigning
                    && now.saturating_sub(p.heard_at) > self.timing.peer_timeout()
            })
            .map(|(name, _)| format!("peer {name} is silent (it may reach the store)"))
            .or_else(|| {
                (fresh < self.group_peers).then(|| {
                    format!(
                        "only {fresh} of {} peers heard (a silent one may reach the store)",
                        self.group_peers
                    )
                })
            })
            .or_else(|| {
                // A peer must have heard us within the peer timeout: it may campaign once it
                // has not heard us for the timeout plus two heartbeats (`may_campaign`).
                self.fresh_peers(now)
                    .find(|(_, p)| {
                        !(self.tenure_epoch..=self.epoch).contains(&p.hears_active)
                            || p.heard_active_at
                                .is_none_or(|t| now.saturating_sub(t) > self.timing.peer_timeout())
                    })
                    .map(|(name, _)| format!("peer {name} does not hear us (it would take over)"))
            });
        match (self.hold, reacher) {
            (None, Some(peer)) => self.demote(
                now,
                format!(
                    "cut off from the store (no confirmation for {}) while peer {peer} reaches it",
                    millis(unconfirmed)
                ),
            ),
            // Holding (or about to) is safe only while every peer is heard and hears us,
            // also during the rejoin grace.
            (_, _) if silent.is_some() => self.demote(
                now,
                format!(
                    "no store confirmation for {} and {}",
                    millis(unconfirmed),
                    silent.unwrap_or_default()
                ),
            ),
            (None, None) => {
                self.hold = Some(Hold {
                    since: now,
                    rejoin_by: None,
                });
                None
            }
            (Some(mut hold), Some(peer)) => {
                let rejoin_by = *hold
                    .rejoin_by
                    .get_or_insert(now + self.timing.rejoin_grace());
                self.hold = Some(hold);
                if now >= rejoin_by {
                    return self.demote(
                        now,
                        format!("the store is back for peer {peer} but not for us"),
                    );
                }
                None
            }
            (Some(mut hold), None) => {
                hold.rejoin_by = None;
                self.hold = Some(hold);
                None
            }
        }
    }

    fn confirmed(&self, now: Duration) -> bool {
        self.confirmed_at
            .is_some_and(|t| now.saturating_sub(t) < self.timing.fence_after())
    }

    fn fresh_peers(&self, now: Duration) -> impl Iterator<Item = (&String, &Peer)> {
        let timeout = self.timing.peer_timeout();
        self.peers
            .iter()
            .filter(move |(_, p)| now.saturating_sub(p.heard_at) <= timeout)
    }

    /// A fresh peer claiming a newer epoch than ours means our claim is history.
    fn newer_claim(&self, now: Duration) -> Option<String> {
        self.fresh_peers(now)
            .find(|(_, p)| p.role.claims() && p.epoch > self.epoch)
            .map(|(name, p)| {
                format!(
                    "peer {name} claims newer epoch {} (ours {})",
                    p.epoch, self.epoch
                )
            })
    }

    fn demote(&mut self, now: Duration, reason: String) -> Option<Change> {
        if !self.role.claims() {
            return None;
        }
        let epoch = self.epoch;
        self.transition(now, Role::Standby, &reason, None);
        Some(Change::Demoted { epoch, reason })
    }

    fn transition(&mut self, now: Duration, to: Role, reason: &str, failover: Option<Duration>) {
        if to == Role::Standby {
            self.confirmed_at = None;
        }
        if to == Role::Active {
            self.promotions += 1;
        } else if self.role.claims() {
            self.demotions += 1;
        }
        self.hold = None;
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            at: now,
            from: self.role,
            to,
            epoch: self.epoch,
            reason: reason.to_string(),
            failover,
        });
        self.role = to;
        self.since = now;
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
