//! Batched UDP sends: `sendmmsg`, with UDP GSO (`UDP_SEGMENT`) for runs of
//! datagrams to the same destination.
//!
//! A shard releases each viewer's packets together (a video frame, a
//! keyframe, retransmissions), so the datagrams to one viewer lie next to
//! each other in the batch. Equal-sized neighbours to one destination go out
//! as one GSO message: the kernel walks its send path (route, IP output,
//! device queue) once for the run and cuts it into datagrams at the end, so
//! every segment still reaches the peer as its own UDP datagram. Where the
//! kernel or the device cannot segment, the sender finds out on the first
//! refusal and sends one datagram per message from then on.

use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;

/// Messages one `sendmmsg` call carries at most.
pub const SEND_BATCH: usize = 64;

/// Datagrams one GSO message carries at most (the kernel's
/// `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const MAX_SEGMENTS: usize = 64;

/// Bytes one GSO message carries at most (a UDP length is 16 bits).
const MAX_GSO_BYTES: usize = 65_000;

/// `UDP_SEGMENT` from linux/udp.h (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Counts of one batched send.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// Datagrams the kernel refused (full buffer or error); they are dropped.
    pub errors: u64,
    /// Datagrams that left inside GSO messages (part of `packets`).
    pub gso_packets: u64,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.gso_packets += other.gso_packets;
    }
}

/// The runs of `datagrams` that can leave as one GSO message each: the
/// same destination, every datagram as long as the first except that the
/// last may be shorter, at most `max_segments` datagrams and
/// `MAX_GSO_BYTES` bytes. Every index is in exactly one run, in order.
pub fn gso_runs<'a>(
    datagrams: &'a [(SocketAddr, &'a [u8])],
    max_segments: usize,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let max_segments = max_segments.max(1);
    let mut start = 0;
    std::iter::from_fn(move || {
        let (dest, first) = datagrams.get(start)?;
        let size = first.len();
        let mut end = start + 1;
        let mut bytes = size;
        while end < datagrams.len() && end - start < max_segments && size > 0 {
            let (d, data) = &datagrams[end];
            if d != dest || data.len() > size || bytes + data.len() > MAX_GSO_BYTES {
                break;
            }
            bytes += data.len();
            end += 1;
            if data.len() < size {
                // A shorter datagram can only be the last segment.
                break;
            }
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// A UDP socket that sends batches, with GSO while the kernel takes it.
#[derive(Debug)]
pub struct UdpSender {
    socket: UdpSocket,
    gso: Cell<bool>,
}

impl UdpSender {
    /// Wraps a (non-blocking) socket. With `gso`, runs to one destination
    /// leave as GSO messages if the kernel knows `UDP_SEGMENT` for it;
    /// without, every datagram is a message of its own.
    pub fn new(socket: UdpSocket, gso: bool) -> UdpSender {
        let gso = gso && gso_supported(&socket);
        UdpSender {
            socket,
            gso: Cell::new(gso),
        }
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Whether runs to one destination still leave as GSO messages.
    pub fn gso(&self) -> bool {
        self.gso.get()
    }

    /// Sends datagrams with `sendmmsg`, up to [`SEND_BATCH`] messages per
    /// system call, without blocking. A message the kernel refuses is
    /// dropped and its datagrams counted as errors; the rest still goes out.
    /// A GSO message refused with `EIO` or `EINVAL` (no segmentation on this
    /// path) switches GSO off and is sent again datagram by datagram.
    pub fn send(&self, datagrams: &[(SocketAddr, &[u8])]) -> Sent {
        let max_segments = if self.gso.get() { MAX_SEGMENTS } else { 1 };
        let runs: Vec<Range<usize>> = gso_runs(datagrams, max_segments).collect();
        let mut sent = Sent::default();
        for chunk in runs.chunks(SEND_BATCH) {
            sent.add(self.send_runs(datagrams, chunk));
        }
        sent
    }

    fn send_runs(&self, datagrams: &[(SocketAddr, &[u8])], runs: &[Range<usize>]) -> Sent {
        let fd = self.socket.as_raw_fd();
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = runs
            .iter()
            .map(|r| sockaddr(&datagrams[r.start].0))
            .collect();
        let mut iovs: Vec<libc::iovec> = runs
            .iter()
            .flat_map(|r| datagrams[r.clone()].iter())
            .map(|(_, d)| libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            })
            .collect();
        // One control buffer per message, 8-byte aligned as cmsghdr needs.
        let mut controls: Vec<[u64; 4]> = vec![[0; 4]; runs.len()];
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
        let mut iov_at = 0;
        for (i, run) in runs.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is valid; we set the fields used.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            let (sa, len) = &mut addrs[i];
            m.msg_hdr.msg_name = (sa as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *len;
            m.msg_hdr.msg_iov = iovs[iov_at..].as_mut_ptr();
            m.msg_hdr.msg_iovlen = run.len();
            iov_at += run.len();
            if run.len() > 1 {
                let segment = datagrams[run.start].1.len() as u16;
                set_segment_size(&mut m.msg_hdr, &mut controls[i], segment);
            }
            msgs.push(m);
        }
        let mut sent = Sent::default();
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: msgs, iovs, addrs and controls live until the call
            // returns; each header points at them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let err = std::io::Error::last_os_error().raw_os_error();
                let run = &runs[done];
                if run.len() > 1 && matches!(err, Some(libc::EIO) | Some(libc::EINVAL)) {
                    // This path cannot segment: no GSO from now on, and this
                    // run goes out one datagram at a time.
                    tracing::info!("UDP GSO refused ({err:?}); sending without it");
                    self.gso.set(false);
                    for i in run.clone() {
                        sent.add(self.send_runs(datagrams, std::slice::from_ref(&(i..i + 1))));
                    }
                } else {
                    // The first message of the rest was refused: drop it, go on.
                    sent.errors += run.len() as u64;
                }
                done += 1;
                continue;
            }
            for (m, run) in msgs[done..done + n as usize]
                .iter()
                .zip(&runs[done..done + n as usize])
            {
                sent.packets += run.len() as u64;
                sent.bytes += u64::from(m.msg_len);
                if run.len() > 1 {
                    sent.gso_packets += run.len() as u64;
                }
            }
            done += n as usize;
        }
        sent
    }
}

/// Puts one `UDP_SEGMENT` control message into `control` and points the
/// header at it.
fn set_segment_size(hdr: &mut libc::msghdr, control: &mut [u64; 4], segment: u16) {
    // SAFETY: CMSG_SPACE(2) is 24 bytes on 64-bit Linux (16 on 32-bit),
    // within the 32 bytes of `control`; CMSG_FIRSTHDR returns its start
    // since msg_controllen covers one header, and the data fits after it.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of_val(control));
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
}

/// Whether the kernel knows `UDP_SEGMENT` on this socket (Linux 4.18+).
fn gso_supported(socket: &UdpSocket) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::bind_media_socket;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn runs(lens: &[(u16, usize)], max: usize) -> Vec<Range<usize>> {
        let data: Vec<Vec<u8>> = lens.iter().map(|(_, n)| vec![0; *n]).collect();
        let batch: Vec<(SocketAddr, &[u8])> = lens
            .iter()
            .zip(&data)
            .map(|((p, _), d)| (addr(*p), d.as_slice()))
            .collect();
        gso_runs(&batch, max).collect()
    }

    #[test]
    fn runs_keep_one_destination_and_one_size() {
        // A frame of 3 to A (last shorter), audio to A, 2 to B, 1 to A.
        let r = runs(
            &[
                (1, 1200),
                (1, 1200),
                (1, 700),
                (1, 120),
                (2, 1200),
                (2, 1200),
                (1, 1200),
            ],
            64,
        );
        assert_eq!(r, vec![0..3, 3..4, 4..6, 6..7]);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        assert_eq!(
            runs(&[(1, 500), (1, 1200), (1, 1200)], 64),
            vec![0..1, 1..3]
        );
    }

    #[test]
    fn runs_respect_the_segment_and_byte_limits() {
        let r = runs(&[(1, 1000); 10], 4);
        assert_eq!(r, vec![0..4, 4..8, 8..10]);
        // 65,000 bytes at most: 54 datagrams of 1200 bytes.
        let r = runs(&[(1, 1200); 60], 64);
        assert_eq!(r, vec![0..54, 54..60]);
        // Without GSO every datagram is its own run.
        assert_eq!(runs(&[(1, 100); 3], 1), vec![0..1, 1..2, 2..3]);
        assert!(runs(&[], 64).is_empty());
        // Empty datagrams are never grouped.
        assert_eq!(runs(&[(1, 0), (1, 0)], 64), vec![0..1, 1..2]);
    }

    fn send_and_check(sender: &UdpSender) -> Sent {
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // Runs of 5 equal datagrams (the last shorter) per destination, the
        // destinations taking turns, plus odd sizes in between.
        let mut payloads: Vec<(usize, Vec<u8>)> = Vec::new();
        for round in 0..20u8 {
            let to = round as usize % 3;
            for k in 0..5u8 {
                let len = if k == 4 { 300 } else { 1100 };
                payloads.push((to, vec![round.wrapping_mul(7).wrapping_add(k); len]));
            }
            payloads.push((to, vec![round; 90 + round as usize]));
        }
        let batch: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .map(|(to, p)| (rx[*to].local_addr().unwrap(), p.as_slice()))
            .collect();
        let sent = sender.send(&batch);
        assert_eq!(sent.packets, payloads.len() as u64);
        assert_eq!(sent.errors, 0);
        assert_eq!(
            sent.bytes,
            payloads.iter().map(|(_, p)| p.len() as u64).sum::<u64>()
        );
        // Every datagram arrives as itself, in order per destination.
        let mut buf = [0u8; 2048];
        for (i, r) in rx.iter().enumerate() {
            for (_, p) in payloads.iter().filter(|(to, _)| *to == i) {
                let n = r.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], p.as_slice());
            }
        }
        sent
    }

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let tx = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let sender = UdpSender::new(tx, true);
        let sent = send_and_check(&sender);
        if sender.gso() {
            // 20 runs of 5 went out as GSO messages.
            assert_eq!(sent.gso_packets, 100);
        } else {
            eprintln!("UDP GSO not available here: checked the plain path only");
        }
    }

    #[test]
    fn a_refused_gso_message_goes_out_datagram_by_datagram() {
        let tx = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        // Without UDP checksums the kernel refuses GSO (EINVAL): the same
        // refusal a device that cannot segment answers with.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from `one`.
        let rc = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let sender = UdpSender::new(tx, true);
        let had_gso = sender.gso();
        let sent = send_and_check(&sender);
        assert!(!sender.gso(), "GSO switched off after the refusal");
        if had_gso {
            assert_eq!(sent.gso_packets, 0);
        }
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_message() {
        let tx = bind_media_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let sent = send_and_check(&UdpSender::new(tx, false));
        assert_eq!(sent.gso_packets, 0);
    }
}
