//! The election in etcd: a lease plus a create-if-absent transaction on the leader key. The
//! key's create revision is the epoch: etcd's revisions only grow, so every term's epoch is
//! larger than the last one's.
//!
//! As standby the task reads the key every heartbeat, four times as often while no active is
//! heard (that read also proves the store is reachable, which heartbeats tell the peers), and
//! campaigns when it is absent. As leader it
//! renews the lease every third of the TTL. Every call has a deadline of a third of the TTL:
//! a store that does not answer in time counts as unreachable.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};
use tokio::time::timeout;

use super::store::{Claim, StoreCommand, StoreEvent, StoreLink};

#[derive(Debug)]
pub struct EtcdElection {
    pub endpoints: Vec<String>,
    pub key: String,
    pub node: String,
    pub ttl: Duration,
    pub heartbeat: Duration,
    /// The lease of a predecessor that handed its claim over (a binary upgrade): renewed
    /// from the first round trip on, so the key, its value and the epoch stay as they were.
    pub inherited: Option<i64>,
}

struct Lease {
    id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl EtcdElection {
    fn deadline(&self) -> Duration {
        self.ttl / 3
    }

    pub async fn run(self, mut link: StoreLink) {
        let mut client: Option<Client> = None;
        let mut lease: Option<Lease> = self.inherited.map(|id| Lease { id, keeper: None });
        // After stepping down, stand by one TTL before campaigning again, so an instance that
        // cannot serve does not win every election it just gave up.
        let mut cooldown_until = Duration::ZERO;
        loop {
            let started = link.clock.now();
            let may_campaign = started >= cooldown_until && *link.may_campaign.borrow();
            let next = match self
                .step(&mut client, &mut lease, &link, may_campaign)
                .await
            {
                Ok(()) if lease.is_some() => self.ttl / 3,
                // No active heard: the key may vanish any moment, so look more often (the
                // whole failover waits on this read).
                Ok(()) if may_campaign => (self.heartbeat / 4).max(Duration::from_millis(10)),
                Ok(()) => self.heartbeat,
                Err(error) => {
                    // A fresh connection next time: an HTTP/2 connection that timed out may be
                    // dead without knowing it.
                    client = None;
                    if let Some(l) = lease.as_mut() {
                        l.keeper = None;
                    }
                    link.send(StoreEvent::Failed { error }).await;
                    self.heartbeat
                }
            };
            let wake = next.saturating_sub(link.clock.now().saturating_sub(started));
            tokio::select! {
                _ = tokio::time::sleep(wake) => {}
                command = link.commands.recv() => match command {
                    Some(StoreCommand::StepDown) => {
                        self.give_up(&mut client, &mut lease).await;
                        cooldown_until = link.clock.now().saturating_add(self.ttl);
                    }
                    Some(StoreCommand::Resign) | None => {
                        self.give_up(&mut client, &mut lease).await;
                        link.send(StoreEvent::Resigned).await;
                        return;
                    }
                    Some(StoreCommand::Freeze(reply)) => {
                        // The lease lives on by its TTL; the successor keeps it alive.
                        let claim = lease.map_or(Claim::None, |l| Claim::EtcdLease { id: l.id });
                        let _ = reply.send(claim);
                        return;
                    }
                },
            }
        }
    }

    /// One round trip: renew when leading, else read the key and campaign if it is absent.
    async fn step(
        &self,
        client: &mut Option<Client>,
        lease: &mut Option<Lease>,
        link: &StoreLink,
        may_campaign: bool,
    ) -> Result<(), String> {
        let started = link.clock.now();
        let client = match client {
            Some(c) => c,
            None => client.insert(self.connect().await?),
        };
        if let Some(held) = lease.as_mut() {
            return match self.renew(client, held).await? {
                true => {
                    link.send(StoreEvent::Renewed { started }).await;
                    Ok(())
                }
                false => {
                    // The lease ran out (typically the store paused longer than the TTL).
                    // Re-claim at once: if the key is still free nobody held it meanwhile.
                    *lease = None;
                    let started = link.clock.now();
                    match self.campaign(client, lease).await? {
                        Some(epoch) => link.send(StoreEvent::Won { epoch, started }).await,
                        None => {
                            link.send(StoreEvent::Lost {
                                why: "the lease expired in etcd and another instance holds the key"
                                    .into(),
                            })
                            .await
                        }
                    }
                    Ok(())
                }
            };
        }
        let current = timeout(self.deadline(), client.get(self.key.as_str(), None))
            .await
            .map_err(|_| "etcd did not answer in time".to_string())?
            .map_err(|e| format!("etcd get: {e}"))?;
        if let Some(kv) = current.kvs().first() {
            link.send(StoreEvent::Reached {
                started,
                leader: Some((
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision() as u64,
                )),
            })
            .await;
            return Ok(());
        }
        link.send(StoreEvent::Reached {
            started,
            leader: None,
        })
        .await;
        if !may_campaign {
            return Ok(());
        }
        let started = link.clock.now();
        if let Some(epoch) = self.campaign(client, lease).await? {
            link.send(StoreEvent::Won { epoch, started }).await;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Client, String> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.deadline())
            .with_timeout(self.deadline())
            .with_keep_alive(crate::discovery::etcd::KEEPALIVE_INTERVAL, self.deadline());
        timeout(
            self.deadline(),
            Client::connect(&self.endpoints, Some(options)),
        )
        .await
        .map_err(|_| "cannot connect to etcd in time".to_string())?
        .map_err(|e| format!("cannot connect to etcd: {e}"))
    }

    /// Grants a lease and creates the key on it unless it exists. `Some(epoch)` on a win.
    async fn campaign(
        &self,
        client: &mut Client,
        lease: &mut Option<Lease>,
    ) -> Result<Option<u64>, String> {
        let granted = timeout(
            self.deadline(),
            client.lease_grant(self.ttl.as_secs() as i64, None),
        )
        .await
        .map_err(|_| "etcd did not grant a lease in time".to_string())?
        .map_err(|e| format!("etcd lease grant: {e}"))?;
        let id = granted.id();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.node.as_str(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let outcome = timeout(self.deadline(), client.txn(txn)).await;
        match outcome {
            Ok(Ok(response)) if response.succeeded() => {
                let epoch = response.header().map_or(0, |h| h.revision()) as u64;
                *lease = Some(Lease { id, keeper: None });
                Ok(Some(epoch))
            }
            Ok(Ok(_)) => {
                // Somebody was faster; the lease is not needed.
                let _ = timeout(self.deadline(), client.lease_revoke(id)).await;
                Ok(None)
            }
            Ok(Err(e)) => Err(format!("etcd campaign: {e}")),
            // The transaction may have been applied: revoke so the key does not outlive us.
            Err(_) => {
                let _ = timeout(self.deadline(), client.lease_revoke(id)).await;
                Err("etcd did not answer the campaign in time".into())
            }
        }
    }

    /// `Ok(true)`: renewed; `Ok(false)`: the lease is gone.
    async fn renew(&self, client: &mut Client, lease: &mut Lease) -> Result<bool, String> {
        let (keeper, stream) = match &mut lease.keeper {
            Some(pair) => pair,
            None => {
                let pair = timeout(self.deadline(), client.lease_keep_alive(lease.id))
                    .await
                    .map_err(|_| "etcd did not open a keep-alive stream in time".to_string())?
                    .map_err(|e| format!("etcd keep-alive: {e}"))?;
                lease.keeper.insert(pair)
            }
        };
        let answer = timeout(self.deadline(), async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(response))) => Ok(response.ttl() > 0),
            Ok(Ok(None)) => {
                lease.keeper = None;
                Err("etcd closed the keep-alive stream".into())
            }
            Ok(Err(e)) => {
                lease.keeper = None;
                Err(format!("etcd keep-alive: {e}"))
            }
            Err(_) => {
                lease.keeper = None;
                Err("etcd did not confirm the renewal in time".into())
            }
        }
    }

    /// Revokes our lease (deleting the key) so a standby can win at once; best effort.
    async fn give_up(&self, client: &mut Option<Client>, lease: &mut Option<Lease>) {
        let Some(held) = lease.take() else { return };
        let Some(client) = client.as_mut() else {
            return;
        };
        match timeout(self.deadline(), client.lease_revoke(held.id)).await {
            Ok(Ok(_)) => tracing::info!("released the leadership in etcd"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
            }
            Err(_) => tracing::warn!(
                "etcd did not answer the revoke in time; the lease expires by itself"
            ),
        }
    }
}
