//! "Never two actives", checked by simulation: two or three nodes, an etcd-like store (leases
//! counted from when the store hears a renewal, expired leases revoked on a 500 ms loop) and
//! lossy links, driven through random fault schedules in 10 ms steps. The nodes do what the
//! daemon does (poll as standby, campaign when allowed, renew as leader, step down after a
//! demotion, heartbeat every interval); only the network and the store are modelled.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const STEP: u64 = 10;
const TTL_MS: u64 = 1000;
const HEARTBEAT_MS: u64 = 100;
/// etcd's lessor revokes expired leases on this period.
const REVOKE_LOOP_MS: u64 = 500;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Toggle node `n`'s link to the store.
    StoreLink(usize),
    /// Toggle heartbeats from node `from` to node `to`.
    Heartbeats(usize, usize),
    /// Toggle the store itself (paused: nobody reaches it; lease clocks keep running).
    Store,
    /// Kill node `n` (it stops at once); the next fault on it restarts it.
    Crash(usize),
    /// Cut node `n` from the store and from every peer, both ways (or heal it all).
    Isolate(usize),
}

#[derive(Debug)]
struct Lease {
    holder: usize,
    expires: u64,
}

struct Store {
    revoked: Vec<u64>,
    up: bool,
    revision: u64,
    /// The leader key: holder's lease id (= node index) and its epoch.
    key: Option<(usize, u64)>,
    leases: Vec<Option<Lease>>,
}

impl Store {
    fn revoke_expired(&mut self, now: u64) {
        if !self.up || now % REVOKE_LOOP_MS != 0 {
            return;
        }
        for slot in self.leases.iter_mut() {
            if slot.as_ref().is_some_and(|l| l.expires <= now) {
                self.revoked.push(now);
                let holder = slot.take().map(|l| l.holder);
                if self.key.map(|(h, _)| Some(h)) == Some(holder) {
                    self.key = None;
                }
            }
        }
    }
}

struct Sim {
    nodes: Vec<Option<Node>>,
    /// Whether each node holds a lease in the store (its own view).
    leading: Vec<bool>,
    next_store_op: Vec<u64>,
    cooldown_until: Vec<u64>,
    store_link: Vec<bool>,
    heartbeats: Vec<Vec<bool>>,
    store: Store,
    /// What happened, for the failure message.
    log: Vec<String>,
    roles: Vec<Option<Role>>,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            nodes: (0..n).map(|i| Some(node(i, n, 0))).collect(),
            leading: vec![false; n],
            next_store_op: vec![0; n],
            cooldown_until: vec![0; n],
            store_link: vec![true; n],
            heartbeats: vec![vec![true; n]; n],
            store: Store {
                revoked: Vec::new(),
                up: true,
                revision: 1,
                key: None,
                leases: (0..n).map(|_| None).collect(),
            },
            log: Vec::new(),
            roles: vec![None; n],
        }
    }

    fn note_roles(&mut self, now: u64) {
        for i in 0..self.nodes.len() {
            let role = self.nodes[i].as_ref().map(Node::role);
            if role != self.roles[i] {
                let why = self.nodes[i]
                    .as_ref()
                    .and_then(|n| n.history().last().map(|t| t.reason.clone()))
                    .unwrap_or_default();
                self.log.push(format!(
                    "{now}: lb{i} {:?} -> {role:?} ({why})",
                    self.roles[i]
                ));
                self.roles[i] = role;
            }
        }
    }

    fn reachable(&self, i: usize) -> bool {
        self.store.up && self.store_link[i]
    }

    fn apply(&mut self, fault: Fault, now: u64) {
        self.log.push(format!("{now}: fault {fault:?}"));
        match fault {
            Fault::StoreLink(i) => self.store_link[i] = !self.store_link[i],
            Fault::Heartbeats(a, b) => self.heartbeats[a][b] = !self.heartbeats[a][b],
            Fault::Store => self.store.up = !self.store.up,
            Fault::Isolate(i) => {
                let cut = self.store_link[i];
                self.store_link[i] = !cut;
                for j in 0..self.nodes.len() {
                    if j != i {
                        self.heartbeats[i][j] = !cut;
                        self.heartbeats[j][i] = !cut;
                    }
                }
            }
            Fault::Crash(i) => {
                if self.nodes[i].is_some() {
                    self.nodes[i] = None;
                } else {
                    self.nodes[i] = Some(node(i, self.nodes.len(), now));
                }
                self.leading[i] = false;
                self.next_store_op[i] = now;
            }
        }
    }

    fn step(&mut self, now: u64) {
        self.store.revoke_expired(now);
        let t = ms(now);
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_none() || now < self.next_store_op[i] {
                continue;
            }
            let change = self.store_op(i, now);
            self.act(i, change, now);
        }
        if now % HEARTBEAT_MS == 0 {
            let reports: Vec<Option<Report>> = self
                .nodes
                .iter()
                .map(|n| n.as_ref().map(|n| n.report(t)))
                .collect();
            for (from, report) in reports.iter().enumerate() {
                let Some(report) = report else { continue };
                for to in 0..self.nodes.len() {
                    if to != from && self.heartbeats[from][to] {
                        if let Some(n) = self.nodes[to].as_mut() {
                            n.heard(report.clone(), t);
                        }
                    }
                }
            }
            for i in 0..self.nodes.len() {
                let change = self.nodes[i].as_mut().and_then(|n| n.tick(t));
                self.act(i, change, now);
            }
        }
    }

    /// One store round trip of node `i`, as the etcd task does it.
    fn store_op(&mut self, i: usize, now: u64) -> Option<Change> {
        let t = ms(now);
        let reachable = self.reachable(i);
        let may = self.nodes[i]
            .as_ref()
            .is_some_and(|n| n.may_campaign(t) || n.role().claims())
            && now >= self.cooldown_until[i];
        let node = self.nodes[i].as_mut()?;
        if !reachable {
            node.store_failed(t);
            self.next_store_op[i] = now + HEARTBEAT_MS;
            return None;
        }
        if self.leading[i] {
            self.next_store_op[i] = now + TTL_MS / 3;
            let alive = self.store.leases[i]
                .as_ref()
                .is_some_and(|l| l.expires > now);
            if alive {
                self.store.leases[i] = Some(Lease {
                    holder: i,
                    expires: now + TTL_MS,
                });
                node.renewed(t);
                return None;
            }
            // etcd answers a renewal of an expired lease only after revoking it (which
            // deletes the key); then the daemon re-claims at once if the key is free.
            self.store.leases[i] = None;
            if self.store.key.map(|(h, _)| h) == Some(i) {
                self.store.key = None;
            }
            self.log
                .push(format!("{now}: lb{i} renews an expired lease"));
            self.leading[i] = false;
            if self.store.key.is_none() {
                return self.claim(i, now);
            }
            return self.nodes[i].as_mut()?.lost(t, "lease expired");
        }
        node.store_ok(t);
        self.next_store_op[i] = now + if may { HEARTBEAT_MS / 4 } else { HEARTBEAT_MS };
        if self.store.key.is_none() && may {
            return self.claim(i, now);
        }
        None
    }

    fn claim(&mut self, i: usize, now: u64) -> Option<Change> {
        self.store.revision += 1;
        let epoch = self.store.revision;
        self.log.push(format!("{now}: lb{i} claims epoch {epoch}"));
        self.store.key = Some((i, epoch));
        self.store.leases[i] = Some(Lease {
            holder: i,
            expires: now + TTL_MS,
        });
        self.leading[i] = true;
        self.next_store_op[i] = now + TTL_MS / 3;
        self.nodes[i].as_mut()?.won(epoch, ms(now), ms(now));
        None
    }

    fn act(&mut self, i: usize, change: Option<Change>, now: u64) {
        if let Some(Change::Demoted { .. }) = change {
            // Step down: revoke if the store is reachable, stand by one TTL.
            if self.leading[i] && self.reachable(i) {
                self.store.leases[i] = None;
                if self.store.key.map(|(h, _)| h) == Some(i) {
                    self.store.key = None;
                }
            }
            self.leading[i] = false;
            self.cooldown_until[i] = now + TTL_MS;
        }
    }

    fn serving(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].as_ref().is_some_and(Node::serving))
            .collect()
    }
}

fn node(i: usize, n: usize, now: u64) -> Node {
    Node::new(
        format!("lb{i}"),
        Timing {
            ttl: ms(TTL_MS),
            heartbeat: ms(HEARTBEAT_MS),
        },
        ms(now),
    )
    .with_group_peers(n - 1)
}

fn fault(n: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0..n).prop_map(Fault::StoreLink),
        (0..n, 1..n).prop_map(move |(a, k)| Fault::Heartbeats(a, (a + k) % n)),
        Just(Fault::Store),
        (0..n).prop_map(Fault::Crash),
        (0..n).prop_map(Fault::Isolate),
    ]
}

/// A schedule: (gap before the fault in ms, fault).
fn schedule(n: usize) -> impl Strategy<Value = Vec<(u64, Fault)>> {
    prop::collection::vec((1u64..300, fault(n)), 1..20)
        .prop_map(|v| v.into_iter().map(|(gap, f)| (gap * STEP, f)).collect())
}

fn run(n: usize, faults: &[(u64, Fault)]) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(n);
    let mut at = 1000;
    let timed: Vec<(u64, Fault)> = faults
        .iter()
        .map(|(gap, f)| {
            at += gap;
            (at, *f)
        })
        .collect();
    let end = at + 10_000;
    let mut pending = timed.into_iter();
    let mut next = pending.next();
    let mut healthy_since = 0;
    let mut now = 0;
    while now <= end {
        while let Some((when, f)) = next {
            if when != now {
                break;
            }
            sim.apply(f, now);
            healthy_since = now;
            next = pending.next();
        }
        sim.step(now);
        sim.note_roles(now);
        let serving = sim.serving();
        prop_assert!(
            serving.len() <= 1,
            "two actives at {now} ms: {serving:?}\n{}\nrevoked at {:?}",
            sim.log.join("\n"),
            sim.store.revoked
        );
        now += STEP;
    }
    // Availability: once every fault is healed, one node serves again within a few leases.
    let mut sim_healed = sim;
    for i in 0..n {
        sim_healed.store_link[i] = true;
        sim_healed.heartbeats[i] = vec![true; n];
        if sim_healed.nodes[i].is_none() {
            sim_healed.nodes[i] = Some(node(i, n, now));
        }
    }
    sim_healed.store.up = true;
    let healed_at = now.max(healthy_since);
    while now <= healed_at + 6 * TTL_MS {
        sim_healed.step(now);
        prop_assert!(sim_healed.serving().len() <= 1, "two actives at {now} ms");
        now += STEP;
    }
    prop_assert_eq!(
        sim_healed.serving().len(),
        1,
        "nobody active {} ms after every fault healed",
        6 * TTL_MS
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn a_pair_never_has_two_actives_whatever_fails(faults in schedule(2)) {
        run(2, &faults)?;
    }

    #[test]
    fn three_instances_never_have_two_actives_whatever_fails(faults in schedule(3)) {
        run(3, &faults)?;
    }
}

#[test]
fn without_faults_the_first_node_leads_and_stays() {
    let mut sim = Sim::new(2);
    for now in (0..30_000).step_by(STEP as usize) {
        sim.step(now);
    }
    assert_eq!(sim.serving(), [0]);
}
