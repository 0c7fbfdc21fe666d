//! Receiving a datagram with the kernel's arrival time (`SO_TIMESTAMPNS`).
//!
//! Viewers measure added latency at the moment a packet reached their
//! socket, not when the generator got round to it: with many viewers on
//! one generator core, a packet may wait in its socket behind everyone
//! else's, and that wait is the generator's, not the server's.
//!
//! The kernel switches receive timestamps on asynchronously the first time a
//! socket asks; until then it stamps at `recvmsg`, which only makes the
//! first packets' figures pessimistic.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

/// Asks the kernel to stamp every datagram's arrival on this socket.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, option and a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wall-clock nanoseconds since the Unix epoch (the kernel stamps' clock).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Nanoseconds of the monotonic clock (`CLOCK_MONOTONIC`, what `Instant`
/// reads), for stamps that two threads of one process compare.
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime fills the timespec we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Places a kernel arrival stamp (wall clock) on the monotonic timeline:
/// `now_realtime` and `now_monotonic` are one moment read from both clocks,
/// just after the datagram was received. The offset between the clocks is
/// taken anew for every datagram because the wall clock is adjusted while a
/// run lasts (NTP, the hypervisor): an offset fixed at the start turned a
/// 1 s step of the host's clock into 1 s of "added latency". An arrival
/// after `now_monotonic` (the clock stepped back in between) is clamped to it.
pub fn to_monotonic(stamp_realtime: u64, now_realtime: u64, now_monotonic: u64) -> u64 {
    let age = now_realtime.saturating_sub(stamp_realtime);
    now_monotonic.saturating_sub(age)
}

/// One datagram without waiting: its length, sender and arrival stamp
/// (wall-clock ns; `None` if the kernel gave none). `WouldBlock` when the
/// socket is empty.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u64>)> {
    // SAFETY: zeroed sockaddr_storage and msghdr are valid; every pointer in
    // the msghdr points at a local that outlives the call.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg is fully set up above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockaddr_to_std(&addr).ok_or_else(|| io::Error::other("unknown address family"))?;
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, from, stamp))
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_stamps_follow_the_clock_offset_of_the_moment() {
        // Arrived 300 µs before it was read, 5 s into the run.
        let mono = 5_000_000_000;
        assert_eq!(to_monotonic(1_000_000, 1_300_000, mono), mono - 300_000);
        // The wall clock was stepped 1.2 s forward since the run began: the
        // same arrival 300 µs ago, stamped and read on the new wall clock,
        // lands at the same monotonic time.
        assert_eq!(
            to_monotonic(1_201_000_000, 1_201_300_000, mono),
            mono - 300_000
        );
        // Stepped back between the stamp and the read: no arrival after now.
        assert_eq!(to_monotonic(2_000_000, 1_000_000, mono), mono);
    }

    #[test]
    fn a_datagram_comes_with_its_arrival_time() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = realtime_ns();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [0u8; 64];
        let (n, from, stamp) = recv(&rx, &mut buf).unwrap();
        // Until the kernel has switched receive timestamps on (it does so
        // asynchronously the first time a socket asks), it stamps at
        // recvmsg instead: between the send and now, either way.
        let after = realtime_ns();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, tx.local_addr().unwrap());
        let stamp = stamp.expect("a kernel timestamp");
        assert!(
            stamp >= before && stamp <= after,
            "{before} {stamp} {after}"
        );
        // Empty socket: WouldBlock, not a wait.
        assert_eq!(
            recv(&rx, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
