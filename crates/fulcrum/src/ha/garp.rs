//! Gratuitous ARP: "VIP is at MAC", broadcast on the interface, so neighbours update their
//! ARP caches at once instead of sending to the old active until their entries expire.
//!
//! Linux updates an existing neighbour entry from a gratuitous request (sender IP = target
//! IP) even inside its `locktime`; that is the form sent here (what keepalived sends too).

use std::io;
use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

const ETH_P_ARP: u16 = 0x0806;
const ARPHRD_ETHER: u16 = 1;
const ETH_P_IP: u16 = 0x0800;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A link-layer socket bound to nothing, sending ARP to the broadcast address of one
/// interface.
#[derive(Debug)]
pub struct Announcer {
    socket: Socket,
    destination: SockAddr,
}

impl Announcer {
    pub fn open(interface_index: u32) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
        )?;
        Ok(Self {
            socket,
            destination: link_layer_broadcast(interface_index)?,
        })
    }

    pub fn send(&self, mac: [u8; 6], address: Ipv4Addr) -> io::Result<()> {
        self.socket
            .send_to(&gratuitous_request(mac, address), &self.destination)
            .map(drop)
    }
}

/// The ARP payload (the kernel adds the Ethernet header from the socket address).
fn gratuitous_request(mac: [u8; 6], address: Ipv4Addr) -> [u8; 28] {
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    packet[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&address.octets());
    // Target hardware address stays zero, as in a request.
    packet[24..28].copy_from_slice(&address.octets());
    packet
}

/// `sockaddr_ll` for the Ethernet broadcast address on one interface. socket2 has no safe
/// constructor for link-layer addresses, so this writes the C struct into socket2's storage.
#[allow(unsafe_code)]
fn link_layer_broadcast(interface_index: u32) -> io::Result<SockAddr> {
    let index = i32::try_from(interface_index)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `view_as` requires a `sockaddr_*` type of this platform: `sockaddr_ll` is one
    // (AF_PACKET's), it is smaller than `sockaddr_storage` (20 vs 128 bytes; `view_as`
    // asserts the size) and its alignment (4) is below the storage's (8). All its fields are
    // plain integers, so the zeroed storage is already a valid value to write through.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::c_ushort;
    ll.sll_protocol = ETH_P_ARP.to_be();
    ll.sll_ifindex = index;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&BROADCAST);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds a fully initialised `sockaddr_ll` of family AF_PACKET and
    // `len` is exactly its size, which is what `SockAddr::new` requires.
    Ok(unsafe { SockAddr::new(storage, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_says_the_vip_is_at_our_mac() {
        let mac = [0x02, 0, 0, 0, 0, 0x11];
        let packet = gratuitous_request(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&packet[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&packet[8..14], &mac);
        assert_eq!(&packet[14..18], &[10, 0, 0, 100], "sender IP");
        assert_eq!(&packet[18..24], &[0; 6]);
        assert_eq!(&packet[24..28], &[10, 0, 0, 100], "target IP = sender IP");
    }
}
