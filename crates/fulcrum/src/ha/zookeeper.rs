//! The election in ZooKeeper: every candidate holds an ephemeral sequential znode
//! `PATH/<node>-<sequence>` on its session; the lowest sequence leads, and each other
//! candidate watches only its predecessor (no herd when the leader goes). The leader's
//! sequence number (plus one) is the epoch: a later leader was queued after it, so epochs
//! only grow. A standby joins the queue only while it hears no active (and leaves it when it
//! hears one again), so an active whose session lapsed while the server was away claims
//! again ahead of it, and while an active serves only the leader is queued.
//!
//! A session that stays silent for the session timeout expires and its znode vanishes: that
//! is the lease. The leader confirms its claim with a round trip every third of the timeout
//! (the listing that also finds the leader), so the server has heard from the session at
//! least as late as that round trip started.

use std::time::Duration;

use tokio::time::timeout;
use zookeeper_client::{
    Acls, Client, CreateMode, MultiWriteError, MultiWriteResult, OneshotWatcher,
};

use super::store::{Claim, StoreCommand, StoreEvent, StoreLink};

#[derive(Debug)]
pub struct ZooKeeperElection {
    pub servers: String,
    pub path: String,
    pub node: String,
    pub ttl: Duration,
    pub heartbeat: Duration,
    /// The leading znode of a predecessor that handed its claim over (a binary upgrade).
    pub inherited: Option<String>,
}

/// Our znode in the queue.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    sequence: u64,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    candidate: Option<Candidate>,
    leading: bool,
    /// Our znode of a session that ended without the server saying so (it was unreachable):
    /// deleted as soon as a new session can, so our own old claim does not block our new one.
    stale: Option<Candidate>,
    /// The predecessor's leading znode (a binary upgrade), on its session: replaced by one of
    /// ours in one transaction at the first round trip, so the queue is never without it.
    adopt: Option<Candidate>,
}

impl ZooKeeperElection {
    fn deadline(&self) -> Duration {
        self.ttl / 3
    }

    pub async fn run(self, mut link: StoreLink) {
        let mut state = State::default();
        if let Some(inherited) = self.inherited.as_deref().and_then(parse) {
            state.candidate = Some(inherited.clone());
            state.leading = true;
            state.adopt = Some(inherited);
        }
        // After stepping down, stay out of the queue for one session timeout.
        let mut cooldown_until = Duration::ZERO;
        loop {
            let started = link.clock.now();
            let may_join = started >= cooldown_until && *link.may_campaign.borrow();
            let (next, watcher) = match self.step(&mut state, &link, may_join).await {
                Ok(_) if state.leading => (self.ttl / 3, None),
                Ok(watcher) => (self.heartbeat, watcher),
                Err(error) => {
                    link.send(StoreEvent::Failed { error }).await;
                    (self.heartbeat, None)
                }
            };
            let wake = next.saturating_sub(link.clock.now().saturating_sub(started));
            let predecessor_gone = async move {
                match watcher {
                    Some(w) => {
                        w.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wake) => {}
                _ = predecessor_gone => {}
                command = link.commands.recv() => match command {
                    Some(StoreCommand::StepDown) => {
                        self.leave(&mut state).await;
                        cooldown_until = link.clock.now().saturating_add(self.ttl);
                    }
                    Some(StoreCommand::Resign) | None => {
                        self.leave(&mut state).await;
                        link.send(StoreEvent::Resigned).await;
                        return;
                    }
                    Some(StoreCommand::Freeze(reply)) => {
                        let leading = state.candidate.clone().filter(|_| state.leading);
                        let Some(ours) = leading else {
                            self.leave(&mut state).await;
                            let _ = reply.send(Claim::None);
                            return;
                        };
                        let _ = reply.send(Claim::ZooKeeperZnode { name: ours.name });
                        // The znode lives on this session: keep the session (the client in
                        // `state`) alive until the process ends, by which time the successor
                        // has replaced the znode with its own.
                        std::future::pending::<()>().await;
                    }
                },
            }
        }
    }

    /// One round trip (plus a join when we are not queued). Returns a watch on our
    /// predecessor when we wait behind one.
    async fn step(
        &self,
        state: &mut State,
        link: &StoreLink,
        may_join: bool,
    ) -> Result<Option<OneshotWatcher>, String> {
        let started = link.clock.now();
        if state.client.is_none() {
            let client = self.connect().await?;
            if let Some(stale) = state.stale.take() {
                let path = format!("{}/{}", self.path, stale.name);
                match timeout(self.deadline(), client.delete(&path, None)).await {
                    Ok(Ok(())) | Ok(Err(zookeeper_client::Error::NoNode)) => {}
                    _ => state.stale = Some(stale),
                }
            }
            state.client = Some(client);
        }
        let Some(client) = state.client.as_ref() else {
            return Ok(None);
        };
        if let Some(predecessors) = state.adopt.clone() {
            let started = link.clock.now();
            match self.replace(client, &predecessors).await? {
                Some(ours) => {
                    tracing::info!(znode = %ours.name, "HA: took the claim over from the previous process");
                    link.send(StoreEvent::Won {
                        epoch: Self::epoch(&ours),
                        started,
                    })
                    .await;
                    state.candidate = Some(ours);
                }
                None => {
                    state.candidate = None;
                    state.leading = false;
                    link.send(StoreEvent::Lost {
                        why: "the previous process's znode was gone before it could be taken over"
                            .into(),
                    })
                    .await;
                }
            }
            state.adopt = None;
        }
        let children = match timeout(self.deadline(), client.list_children(&self.path)).await {
            Err(_) => return Err("zookeeper did not answer in time".into()),
            Ok(Ok(children)) => children,
            Ok(Err(zookeeper_client::Error::SessionExpired)) => {
                // The client ends a session it could not keep alive, also while the server
                // is out of reach and may well keep it (a restarted server restores
                // sessions). So this is a failed round trip, not a lost claim: the role rules
                // decide (a peer's newer claim or the fencing deadline), and a new session
                // claims again.
                state.client = None;
                state.leading = false;
                state.stale = state.candidate.take().or(state.stale.take());
                return Err("the zookeeper session ended while the server was unreachable".into());
            }
            Ok(Err(e)) => return Err(format!("zookeeper list {}: {e}", self.path)),
        };
        let mut queue: Vec<Candidate> = children.iter().filter_map(|c| parse(c)).collect();
        queue.sort_by_key(|c| c.sequence);
        if let Some(ours) = &state.candidate {
            if !queue.iter().any(|c| c.name == ours.name) {
                // Our session expired and took the znode (or it was deleted).
                state.candidate = None;
                if state.leading {
                    state.leading = false;
                    link.send(StoreEvent::Lost {
                        why: "our znode is gone from zookeeper".into(),
                    })
                    .await;
                }
            }
        }
        let first = queue.first().map(|c| c.name.clone());
        let waiting = state
            .candidate
            .as_ref()
            .filter(|ours| !state.leading && first.as_ref() != Some(&ours.name));
        if let (Some(ours), false) = (waiting, may_join) {
            // An active is heard again: leave the queue, so that only the leader is in it
            // while an active serves. That is what lets an upgraded active move its claim to
            // a new znode (see `succession`) without queueing behind the standby; the
            // standby joins again once it stops hearing the active, well before the
            // active's session could expire (validation keeps 5 heartbeats under the TTL).
            let path = format!("{}/{}", self.path, ours.name);
            match timeout(self.deadline(), client.delete(&path, None)).await {
                Ok(Ok(())) | Ok(Err(zookeeper_client::Error::NoNode)) => {
                    queue.retain(|c| c.name != ours.name);
                    state.candidate = None;
                }
                Ok(Err(e)) => return Err(format!("zookeeper delete {path}: {e}")),
                Err(_) => return Err("zookeeper did not answer in time".into()),
            }
        }
        if state.candidate.is_none() && may_join {
            let ours = self.join(client, &queue).await?;
            queue.push(ours.clone());
            queue.sort_by_key(|c| c.sequence);
            state.candidate = Some(ours);
        }
        let leader = queue.first().cloned();
        if state.leading
            && leader.as_ref().map(|l| &l.name) != state.candidate.as_ref().map(|c| &c.name)
        {
            // Only a handover can queue our znode behind another (a standby that joined
            // while the predecessor's znode was being replaced): that one leads now.
            state.leading = false;
            link.send(StoreEvent::Lost {
                why: "another candidate leads in zookeeper".into(),
            })
            .await;
        }
        match (&state.candidate, &leader) {
            (Some(ours), Some(first)) if ours.name == first.name => {
                if state.leading {
                    link.send(StoreEvent::Renewed { started }).await;
                } else {
                    state.leading = true;
                    link.send(StoreEvent::Won {
                        epoch: Self::epoch(ours),
                        started,
                    })
                    .await;
                }
                Ok(None)
            }
            (ours, _) => {
                link.send(StoreEvent::Reached {
                    started,
                    leader: leader.map(|l| (owner(&l.name).to_string(), Self::epoch(&l))),
                })
                .await;
                let Some(ours) = ours else { return Ok(None) };
                let predecessor = queue
                    .iter()
                    .take_while(|c| c.sequence < ours.sequence)
                    .last();
                match predecessor {
                    Some(p) => {
                        let path = format!("{}/{}", self.path, p.name);
                        match timeout(self.deadline(), client.check_and_watch_stat(&path)).await {
                            Ok(Ok((_, watcher))) => Ok(Some(watcher)),
                            Ok(Err(e)) => Err(format!("zookeeper watch {path}: {e}")),
                            Err(_) => Err("zookeeper did not answer in time".into()),
                        }
                    }
                    None => Ok(None),
                }
            }
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        let client = timeout(
            self.deadline() * 3,
            Client::connector()
                .with_session_timeout(self.ttl)
                .with_connection_timeout(self.deadline())
                .connect(&self.servers),
        )
        .await
        .map_err(|_| "cannot connect to zookeeper in time".to_string())?
        .map_err(|e| format!("cannot connect to zookeeper: {e}"))?;
        let negotiated = client.session_timeout();
        if negotiated < self.ttl {
            // Our fencing deadline assumes the server keeps a silent session this long.
            return Err(format!(
                "zookeeper granted a {negotiated:?} session, shorter than ha.election.session_timeout ({:?}); raise the server's maxSessionTimeout or lower session_timeout",
                self.ttl
            ));
        }
        let parent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        match timeout(self.deadline(), client.mkdir(&self.path, &parent)).await {
            Ok(Ok(())) | Ok(Err(zookeeper_client::Error::NodeExists)) => Ok(client),
            Ok(Err(e)) => Err(format!("cannot create {}: {e}", self.path)),
            Err(_) => Err("zookeeper did not answer in time".into()),
        }
    }

    /// Queues a candidate znode of ours, adopting one that a lost reply left behind on this
    /// very session (never one of an earlier session: that one dies with its session).
    async fn join(&self, client: &Client, queue: &[Candidate]) -> Result<Candidate, String> {
        if let Some(ours) = self.left_behind(client, queue).await {
            return Ok(ours);
        }
        let prefix = format!("{}/{}-", self.path, self.node);
        let ephemeral = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        let (_, sequence) = timeout(
            self.deadline(),
            client.create(&prefix, self.node.as_bytes(), &ephemeral),
        )
        .await
        .map_err(|_| "zookeeper did not answer in time".to_string())?
        .map_err(|e| format!("cannot join the election under {}: {e}", self.path))?;
        Ok(Candidate {
            name: format!("{}-{sequence}", self.node),
            sequence: sequence.into_i64() as u64,
        })
    }

    /// A znode of ours on this very session that a lost reply left behind.
    async fn left_behind(&self, client: &Client, queue: &[Candidate]) -> Option<Candidate> {
        for c in queue.iter().filter(|c| owner(&c.name) == self.node) {
            let path = format!("{}/{}", self.path, c.name);
            if let Ok(Ok(Some(stat))) = timeout(self.deadline(), client.check_stat(&path)).await {
                if stat.ephemeral_owner == client.session_id().0 {
                    return Some(c.clone());
                }
            }
        }
        None
    }

    /// Replaces the predecessor's znode by one of ours in one transaction (delete it, create
    /// ours), so the claim moves to this session without a moment in which the queue lacks
    /// it. `Ok(None)`: the predecessor's znode was gone (its session ended first).
    async fn replace(
        &self,
        client: &Client,
        predecessors: &Candidate,
    ) -> Result<Option<Candidate>, String> {
        let old = format!("{}/{}", self.path, predecessors.name);
        let prefix = format!("{}/{}-", self.path, self.node);
        let ephemeral = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        let mut writer = client.new_multi_writer();
        writer
            .add_delete(&old, None)
            .and_then(|()| writer.add_create(&prefix, self.node.as_bytes(), &ephemeral))
            .map_err(|e| format!("zookeeper handover transaction: {e}"))?;
        let outcome = timeout(self.deadline(), writer.commit())
            .await
            .map_err(|_| "zookeeper did not answer the handover in time".to_string())?;
        match outcome {
            Ok(results) => {
                let created = results.into_iter().find_map(|r| match r {
                    MultiWriteResult::Create { path, .. } => Some(path),
                    _ => None,
                });
                let name = created
                    .as_deref()
                    .and_then(|p| p.rsplit('/').next())
                    .and_then(parse)
                    .ok_or("zookeeper answered the handover without the created znode")?;
                Ok(Some(name))
            }
            Err(MultiWriteError::OperationFailed {
                index: 0,
                source: zookeeper_client::Error::NoNode,
            }) => {
                // Gone: either its session ended, or this very transaction was applied and
                // its reply lost (then our znode is queued on this session).
                let children = timeout(self.deadline(), client.list_children(&self.path))
                    .await
                    .map_err(|_| "zookeeper did not answer in time".to_string())?
                    .map_err(|e| format!("zookeeper list {}: {e}", self.path))?;
                let queue: Vec<Candidate> = children.iter().filter_map(|c| parse(c)).collect();
                Ok(self.left_behind(client, &queue).await)
            }
            Err(e) => Err(format!("zookeeper handover transaction: {e}")),
        }
    }

    /// Epochs start at 1 (0 means "no claim" in heartbeats); the first znode's sequence is 0.
    fn epoch(candidate: &Candidate) -> u64 {
        candidate.sequence + 1
    }

    /// Deletes our znode so the next candidate leads at once; best effort.
    async fn leave(&self, state: &mut State) {
        state.leading = false;
        let (Some(client), Some(ours)) = (state.client.as_ref(), state.candidate.take()) else {
            return;
        };
        let path = format!("{}/{}", self.path, ours.name);
        match timeout(self.deadline(), client.delete(&path, None)).await {
            Ok(Ok(())) => tracing::info!("released the leadership in zookeeper"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not delete our znode; the session expiry removes it")
            }
            Err(_) => tracing::warn!(
                "zookeeper did not answer in time; the session expiry removes our znode"
            ),
        }
    }
}

/// `lb1-0000000007` → the candidate; other names are not ours to judge.
fn parse(name: &str) -> Option<Candidate> {
    let (_, sequence) = name.rsplit_once('-')?;
    Some(Candidate {
        name: name.to_string(),
        sequence: sequence.parse().ok()?,
    })
}

/// The node name in a candidate's znode name.
fn owner(name: &str) -> &str {
    name.rsplit_once('-').map_or(name, |(node, _)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_carry_owner_and_sequence() {
        let c = parse("lb-east-1-0000000042").unwrap();
        assert_eq!((c.sequence, owner(&c.name)), (42, "lb-east-1"));
        assert!(parse("garbage").is_none());
    }
}
