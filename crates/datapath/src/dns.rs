//! Held DNS answers (bpf/lib/dns.h): taking them from the `cw_dns` ring, waiting for them from
//! another thread, and sending each one on, marked so the program lets it through, once the
//! agent has programmed its addresses.

use crate::DatapathError;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// One held frame: the whole packet as tc saw it (from the Ethernet header), and the interface
/// it was leaving by (the endpoint's host-side veth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDns {
    pub ifindex: u32,
    pub frame: Vec<u8>,
}

/// Recomputes the UDP or TCP checksum of a frame. Needed because a held frame was copied before
/// the checksum was filled in: on veths the sender leaves it to "offload" (only the pseudo-header
/// sum is there), and a frame sent again from a packet socket is taken as final, so the
/// workload's stack would drop it. Frames that are neither are left alone.
pub fn fix_l4_checksum(frame: &mut [u8]) {
    let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    let mut sum: u32 = 0;
    let add = |sum: &mut u32, bytes: &[u8]| {
        for c in bytes.chunks(2) {
            *sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    let (proto, l4_start, l4_end) = match ethertype {
        0x0800 if frame.len() >= 34 => {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            let (start, end) = (14 + ihl, (14 + total).min(frame.len()));
            if ihl < 20 || end <= start {
                return;
            }
            add(&mut sum, &frame[26..34]);
            sum += u32::from(frame[23]) + (end - start) as u32;
            (frame[23], start, end)
        }
        0x86dd if frame.len() >= 54 => {
            let plen = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
            let (start, end) = (54, (54 + plen).min(frame.len()));
            add(&mut sum, &frame[22..54]);
            sum += u32::from(frame[20]) + (end - start) as u32;
            (frame[20], start, end)
        }
        _ => return,
    };
    let off = match proto {
        17 => 6,
        6 => 16,
        _ => return,
    };
    if l4_end < l4_start + off + 2 {
        return;
    }
    frame[l4_start + off] = 0;
    frame[l4_start + off + 1] = 0;
    add(&mut sum, &frame[l4_start..l4_end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 && proto == 17 {
        c = 0xffff; // UDP: zero means "no checksum"
    }
    frame[l4_start + off..l4_start + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Sleeps until the ring holds answers: a duplicate of the ring's descriptor, so a thread that
/// does not own the datapath can wait on it and wake the one that does.
#[derive(Debug)]
pub struct DnsWaker(pub(crate) OwnedFd);

impl DnsWaker {
    /// Whether answers are waiting, after at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        match rc {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            0 => Ok(false),
            _ => Ok(p.revents & libc::POLLIN != 0),
        }
    }
}

/// Sends held frames out of their interface again, with the release mark: a raw packet socket
/// (no protocol: it receives nothing) opened in the interfaces' network namespace.
#[derive(Debug)]
pub struct Releaser(OwnedFd);

impl Releaser {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, DatapathError> {
        let e = |what: &str| DatapathError::Kernel {
            what: what.into(),
            detail: io::Error::last_os_error().to_string(),
        };
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(e("opening a packet socket to release DNS answers"));
        }
        // SAFETY: fd is a new descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mark: u32 = crate::abi::DNS_RELEASE_MARK;
        // SAFETY: setsockopt with a pointer to a live u32 and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                &mark as *const u32 as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(e(
                "marking released DNS answers (SO_MARK needs CAP_NET_ADMIN)",
            ));
        }
        Ok(Self(fd))
    }

    /// Sends `h` out of its interface as it was (with its checksum completed).
    pub fn send(&self, h: &HeldDns) -> io::Result<()> {
        if h.frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too short",
            ));
        }
        let mut frame = h.frame.clone();
        fix_l4_checksum(&mut frame);
        let h = &HeldDns {
            ifindex: h.ifindex,
            frame,
        };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = h.ifindex as i32;
        // The EtherType as it is in the frame (network order), as sll_protocol wants it.
        sa.sll_protocol = u16::from_ne_bytes([h.frame[12], h.frame[13]]);
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&h.frame[0..6]);
        // SAFETY: the buffer and the address are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                h.frame.as_ptr() as *const libc::c_void,
                h.frame.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_completed_as_the_stack_checks_them() {
        // A UDP/IPv4 DNS answer as captured from the wire (checksum 0x8b4f), then zeroed.
        let hexs = "0600000000000200000000000800450000310001000040116a330a4e00020a4e00010035c35d001d8b4f0007818000010001000000000000";
        let mut f: Vec<u8> = (0..hexs.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hexs[i..i + 2], 16).unwrap())
            .collect();
        let want = f.clone();
        f[40] = 0x12;
        f[41] = 0x34;
        fix_l4_checksum(&mut f);
        // Verify by summing with the checksum in place: a valid segment sums to 0xffff.
        let mut sum: u32 = 0;
        for c in f[26..34].chunks(2).chain(f[34..].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        sum += 17 + (f.len() - 34) as u32;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(f.len(), want.len());
        // Not IP: untouched.
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let before = arp.clone();
        fix_l4_checksum(&mut arp);
        assert_eq!(arp, before);
    }

    #[test]
    fn ipv6_udp_checksums_are_completed_too() {
        // Ethernet + IPv6 (next header UDP) + UDP 53 -> 40000 + 5 bytes of payload.
        let mut f = vec![0u8; 14 + 40 + 8 + 5];
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14] = 0x60;
        f[18..20].copy_from_slice(&13u16.to_be_bytes()); // payload length
        f[20] = 17;
        f[21] = 64;
        f[22..38].copy_from_slice(
            &"2001:db8::53"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        f[38..54].copy_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        f[54..56].copy_from_slice(&53u16.to_be_bytes());
        f[56..58].copy_from_slice(&40000u16.to_be_bytes());
        f[58..60].copy_from_slice(&13u16.to_be_bytes());
        f[62..67].copy_from_slice(b"hello");
        fix_l4_checksum(&mut f);
        let mut sum: u32 = 0;
        for c in f[22..54].chunks(2).chain(f[54..].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        sum += 17 + 13;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_ne!(&f[60..62], &[0, 0], "IPv6 UDP needs a checksum");
    }
}
