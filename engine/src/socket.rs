//! Media sockets: one per shard and ICE address, all on the same port via
//! `SO_REUSEPORT`, with large buffers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking UDP socket with `SO_REUSEPORT` and the given buffers.
pub fn bind_media_socket(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    bind_udp(addr, buffer, true)
}

/// Binds the node's one cluster socket: the media sockets' buffers (relayed
/// media arrives here in bursts too) but no `SO_REUSEPORT`, so a second node
/// on the same port fails to start instead of stealing half the datagrams.
pub fn bind_cluster_socket(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    bind_udp(addr, buffer, false)
}

fn bind_udp(addr: SocketAddr, buffer: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // The kernel caps these at net.core.rmem_max/wmem_max; `corecast doctor`
    // and tuning/tune check that the caps are high enough.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Datagrams one `sendmmsg` call carries at most.
pub const SEND_BATCH: usize = 64;

/// Counts of one batched send.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// Datagrams the kernel refused (full buffer or error); they are dropped.
    pub errors: u64,
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sa: socket2::SockAddr = (*addr).into();
    // SAFETY: SockAddr holds a valid sockaddr of `len()` bytes, which fits
    // in sockaddr_storage by definition.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            sa.len() as usize,
        );
    }
    (storage, sa.len())
}

/// Sends datagrams with `sendmmsg`, up to [`SEND_BATCH`] per system call,
/// without blocking. A datagram the kernel refuses is dropped and counted;
/// the rest of the batch still goes out.
pub fn send_batch(socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> Sent {
    let fd = socket.as_raw_fd();
    let mut sent = Sent::default();
    for chunk in datagrams.chunks(SEND_BATCH) {
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            chunk.iter().map(|(a, _)| sockaddr(a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, d)| libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = addrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|((sa, len), iov)| {
                // SAFETY: an all-zero mmsghdr is valid; we set the fields used.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (sa as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = *len;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: msgs, iovs and addrs live until the call returns; each
            // header points at one of them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // The first datagram of the rest was refused: drop it, go on.
                sent.errors += 1;
                done += 1;
                continue;
            }
            for m in &msgs[done..done + n as usize] {
                sent.packets += 1;
                sent.bytes += u64::from(m.msg_len);
            }
            done += n as usize;
        }
    }
    sent
}

/// This host's non-loopback IPv4 addresses, or 127.0.0.1 when it has none.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list that we walk read-only and free
    // with freeifaddrs; every pointer is checked for null before use.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut cur = list;
            while !cur.is_null() {
                let ifa = &*cur;
                if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if !ip.is_loopback() && !ip.is_unspecified() {
                        out.push(IpAddr::V4(ip));
                    }
                }
                cur = ifa.ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    if out.is_empty() {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_reach_every_destination() {
        let tx = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let payloads: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 100 + i as usize]).collect();
        let batch: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (rx[i % 3].local_addr().unwrap(), p.as_slice()))
            .collect();
        let sent = send_batch(&tx, &batch);
        assert_eq!(sent.packets, 150);
        assert_eq!(sent.errors, 0);
        assert_eq!(
            sent.bytes,
            payloads.iter().map(|p| p.len() as u64).sum::<u64>()
        );
        let mut buf = [0u8; 512];
        for (i, r) in rx.iter().enumerate() {
            for k in (i..150).step_by(3) {
                let n = r.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], payloads[k].as_slice());
            }
        }
    }

    #[test]
    fn shards_share_one_port() {
        let a = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind_media_socket(SocketAddr::from(([127, 0, 0, 1], port)), 1 << 20).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
    }
}
