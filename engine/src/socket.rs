//! Media sockets: one per shard and ICE address, all on the same port via
//! `SO_REUSEPORT`, with large buffers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

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

/// Binds a listening TCP socket with `SO_REUSEPORT` (one per shard: the
/// kernel spreads connections over them).
pub fn bind_stream_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
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
    fn shards_share_one_port() {
        let a = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind_media_socket(SocketAddr::from(([127, 0, 0, 1], port)), 1 << 20).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
    }
}
