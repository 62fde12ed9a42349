//! The virtual IP: added to an interface through netlink with a kernel lifetime, refreshed
//! while this instance is active, announced with gratuitous ARP, removed on demotion.
//!
//! The lifetime is the safety net for the cases where fulcrum cannot remove the address
//! itself (SIGKILL, a frozen process): the kernel deletes it when `valid_lft` runs out, so a
//! dead active never keeps answering ARP for the VIP.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fulcrum_core::config::Vip;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;

/// The VIP on one interface.
#[derive(Debug, Clone)]
pub struct VirtualIp {
    vip: Vip,
    handle: Handle,
    /// Whole seconds, at least 1, no longer than the lease.
    lifetime: u32,
}

impl VirtualIp {
    /// Opens a netlink connection (spawned on the current runtime) for `vip`.
    pub fn new(vip: Vip, lease: Duration) -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self {
            vip,
            handle,
            lifetime: lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
        })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.vip.address
    }

    /// The interface's index and hardware address.
    async fn link(&self) -> Result<(u32, Vec<u8>), String> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(self.vip.interface.clone())
            .execute()
            .try_next()
            .await
            .map_err(|e| format!("interface {}: {e}", self.vip.interface))?
            .ok_or_else(|| format!("interface {} not found", self.vip.interface))?;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => Some(mac.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok((link.header.index, mac))
    }

    /// Checks that the interface exists, changing nothing.
    pub async fn check(&self) -> Result<(), String> {
        self.link().await.map(|_| ())
    }

    /// Adds the address, or refreshes its lifetime when it is already there.
    pub async fn add_or_refresh(&self) -> Result<(), String> {
        let (index, _) = self.link().await?;
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(self.vip.address), self.vip.prefix_len)
            .replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = self.lifetime;
        lifetime.ifa_valid = self.lifetime;
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        request.execute().await.map_err(|e| {
            format!(
                "cannot add {} to {}: {e}",
                self.vip.address, self.vip.interface
            )
        })
    }

    /// Removes the address if it is on the interface.
    pub async fn remove(&self) -> Result<(), String> {
        let (index, _) = self.link().await?;
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(self.vip.address))
            .execute();
        while let Some(message) = found
            .try_next()
            .await
            .map_err(|e| format!("cannot list addresses of {}: {e}", self.vip.interface))?
        {
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| {
                    format!(
                        "cannot remove {} from {}: {e}",
                        self.vip.address, self.vip.interface
                    )
                })?;
        }
        Ok(())
    }

    /// Sends `garp_count` gratuitous ARP requests spaced by `garp_interval`, so switches and
    /// neighbours move the VIP to this host's MAC address.
    pub async fn announce(&self) -> Result<(), String> {
        let (index, mac) = self.link().await?;
        let mac: [u8; 6] = mac.try_into().map_err(|_| {
            format!(
                "interface {} has no Ethernet address to announce",
                self.vip.interface
            )
        })?;
        let socket = super::garp::Announcer::open(index)
            .map_err(|e| format!("cannot open an ARP socket: {e}"))?;
        for i in 0..self.vip.garp_count {
            if i > 0 {
                tokio::time::sleep(self.vip.garp_interval).await;
            }
            socket
                .send(mac, self.vip.address)
                .map_err(|e| format!("cannot send gratuitous ARP: {e}"))?;
        }
        Ok(())
    }
}
