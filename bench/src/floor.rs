//! `corecast-bench floor`: the raw-UDP floor of this machine.
//!
//! A plain forwarder (recvmmsg, then one sendmmsg of the batch to N sinks,
//! sink by sink; no crypto, no WebRTC) driven at the packet size the load
//! test uses. Its egress packets per second of its own CPU time is what
//! "ratio to floor" divides by. With `--bitrate` its input is what one
//! publisher of the load generator sends (the same [`Schedule`]: video
//! frames back to back, keyframes, audio), so it forwards the same bursts
//! the server does; without it, `--rate` packets a second evenly.
//!
//! The sinks are read the way the load generator reads its viewers' sockets
//! (a glommio task per socket waiting on io_uring, kernel receive stamps
//! on), because on loopback the sender pays for the delivery: waking a
//! waiting reader is part of every forwarded packet's cost. `--idle-sinks`
//! reads them instead from a thread that polls and sleeps, so no delivery
//! wakes anyone: a cheaper floor that no WebRTC viewer gets.
//!
//! Each datagram carries its send time (monotonic ns, bytes 4..12), and the
//! waiting sinks take the kernel's arrival stamp (placed on the monotonic
//! clock as the load generator's viewers do, see [`crate::rxstamp::to_monotonic`]), so the floor also reports
//! the latency a plain forwarder adds on this machine at the same load: the
//! latency floor that `corecast-bench load`'s added latency compares with.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::accounting::Totals;
use crate::load::parse_bitrate;
use crate::load::schedule::{MediaPlan, Schedule};
use crate::payload;

/// Bytes of RTP header on each datagram of the publisher-shaped input.
const RTP_HEADER: usize = 12;

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Destinations each packet is forwarded to.
    #[arg(long, default_value_t = 20)]
    pub fanout: usize,
    #[arg(long, default_value_t = 1200)]
    pub packet_size: usize,
    /// Packets per second the generator sends into the forwarder, evenly
    /// (ignored with `--bitrate`).
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Send what one publisher of `corecast-bench load` sends at this video
    /// bitrate instead (same schedule: 30 fps frames back to back, keyframes
    /// every 2 s, 50 audio packets/s of 100 bytes), with `--packet-size` as
    /// the largest payload and a 12-byte RTP header on each.
    #[arg(long)]
    pub bitrate: Option<String>,
    /// With `--bitrate`: pace the video at this multiple of the bitrate, as
    /// `corecast-bench load --pacing` does (0: frames back to back).
    #[arg(long, default_value_t = 0.0)]
    pub pacing: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Pin the forwarder to this core.
    #[arg(long)]
    pub core: Option<usize>,
    /// Read the sinks from a polling thread (no wake-ups on delivery)
    /// instead of the way the load generator reads its viewers.
    #[arg(long)]
    pub idle_sinks: bool,
    /// Pin the sink reader to this core (the generator's core).
    #[arg(long)]
    pub sink_core: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorSummary {
    pub fanout: usize,
    /// The publisher-shaped input's video bitrate, if `--bitrate` was given.
    pub bitrate: Option<u64>,
    pub pacing: f64,
    pub idle_sinks: bool,
    pub packet_size: usize,
    pub sent: u64,
    pub forwarded: u64,
    pub received: u64,
    pub egress_pps: f64,
    pub forwarder_cpu_cores: f64,
    pub floor_pps_per_core: f64,
    pub loss: f64,
    /// Send to the kernel's arrival stamp at the sink, ms (waiting sinks
    /// only: the idle sinks take no stamps).
    pub p50_added_ms: Option<f64>,
    pub p99_added_ms: Option<f64>,
}

/// Where the generator writes a datagram's send time.
const SENT_AT: std::ops::Range<usize> = 4..12;

fn stamp_sent(packet: &mut [u8], sent_ns: u64) {
    if let Some(at) = packet.get_mut(SENT_AT) {
        at.copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// The send time a datagram carries, if it is long enough to carry one.
fn sent_at(datagram: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = datagram.get(SENT_AT)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Records one datagram's added latency: arrival stamp minus send time.
fn record_added(latency: &mut Totals, datagram: &[u8], arrival_ns: Option<u64>) {
    if let (Some(sent), Some(arrival)) = (sent_at(datagram), arrival_ns) {
        latency.record_latency(arrival.saturating_sub(sent) / 1000);
    }
}

const BATCH: usize = 64;

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let SocketAddr::V4(v4) = addr else {
        // The floor runs on 127.0.0.1 only.
        return (unsafe { std::mem::zeroed() }, 0);
    };
    // SAFETY: an all-zero sockaddr_in is valid; we fill the fields we need.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    (
        sa,
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
}

/// The forwarder loop: returns (forwarded datagrams, its CPU seconds).
fn forward(socket: UdpSocket, sinks: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> (u64, f64) {
    let fd = socket.as_raw_fd();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let dests: Vec<(libc::sockaddr_in, libc::socklen_t)> =
        sinks.iter().map(|a| sockaddr(*a)).collect();
    let cpu0 = thread_cpu();
    let mut forwarded = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the iovecs and headers point into `bufs`, which outlive the call.
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        // One iovec per received datagram; every destination's message
        // points at it.
        let mut payloads: Vec<libc::iovec> = msgs
            .iter()
            .take(n as usize)
            .map(|m| libc::iovec {
                // SAFETY: recvmmsg filled these headers; msg_iov points into `iov`.
                iov_base: unsafe { (*m.msg_hdr.msg_iov).iov_base },
                iov_len: m.msg_len as usize,
            })
            .collect();
        // Destination by destination, each with the whole batch in order,
        // as corecast releases a viewer's packets together: on loopback a
        // sink's reader is then woken once per batch, not once per datagram.
        let mut out: Vec<libc::mmsghdr> = Vec::with_capacity(dests.len() * payloads.len());
        for (sa, sl) in &dests {
            for payload in payloads.iter_mut() {
                // SAFETY: a zeroed mmsghdr is valid; the pointers set here
                // point at `dests` and `payloads`, which outlive the sends.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (sa as *const libc::sockaddr_in).cast_mut().cast();
                h.msg_hdr.msg_namelen = *sl;
                h.msg_hdr.msg_iov = payload;
                h.msg_hdr.msg_iovlen = 1;
                out.push(h);
            }
        }
        let mut done = 0usize;
        while done < out.len() {
            // SAFETY: `out[done..]` is a valid array of set-up headers.
            let sent = unsafe {
                libc::sendmmsg(fd, out[done..].as_mut_ptr(), (out.len() - done) as u32, 0)
            };
            if sent <= 0 {
                break;
            }
            done += sent as usize;
        }
        forwarded += done as u64;
    }
    (forwarded, thread_cpu() - cpu0)
}

pub fn run(args: FloorArgs) -> Result<FloorSummary, String> {
    let bitrate = match &args.bitrate {
        Some(b) => Some(parse_bitrate(b).ok_or_else(|| format!("bad --bitrate {b}"))?),
        None => None,
    };
    let io = |e: std::io::Error| e.to_string();
    let fwd = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let fwd_addr = fwd.local_addr().map_err(io)?;
    let sinks: Vec<UdpSocket> = (0..args.fanout.max(1))
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let sink_addrs: Vec<SocketAddr> = sinks.iter().filter_map(|s| s.local_addr().ok()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Totals::default()));

    let reader = if args.idle_sinks {
        idle_reader(sinks, stop.clone(), received.clone())
    } else {
        waiting_reader(
            sinks,
            args.sink_core,
            stop.clone(),
            received.clone(),
            latency.clone(),
        )?
    };
    let forwarder = {
        let stop = stop.clone();
        let core = args.core;
        std::thread::spawn(move || {
            if let Some(c) = core {
                core_pin(c);
            }
            forward(fwd, sink_addrs, stop)
        })
    };

    // The generator: every millisecond, what is due.
    let src = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let start = Instant::now();
    let mut schedule = bitrate.map(|b| {
        let mut plan = MediaPlan::standard(b, args.pacing);
        plan.max_payload = args.packet_size.max(payload::HEADER);
        Schedule::new(plan, start)
    });
    let mut packet = vec![0x80u8; args.packet_size.max(SENT_AT.end)];
    let mut due = Vec::new();
    let mut sent = 0u64;
    while start.elapsed() < args.duration {
        let sizes: Vec<usize> = match schedule.as_mut() {
            Some(schedule) => {
                schedule.due(Instant::now(), &mut due);
                due.drain(..).map(|p| RTP_HEADER + p.size).collect()
            }
            None => {
                let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
                vec![args.packet_size; due.saturating_sub(sent) as usize]
            }
        };
        for size in sizes {
            packet.resize(size.max(SENT_AT.end), 0x80);
            stamp_sent(&mut packet, crate::rxstamp::monotonic_ns());
            if src.send_to(&packet, fwd_addr).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (forwarded, cpu) = forwarder
        .join()
        .map_err(|_| "forwarder panicked".to_string())?;
    let _ = reader.join();
    let got = received.load(Ordering::Relaxed);
    let cores = cpu / elapsed;
    let egress = got as f64 / elapsed;
    let expected = sent * args.fanout.max(1) as u64;
    let latency = latency.lock().map(|l| l.clone()).unwrap_or_default();
    let added = |q: f64| (!latency.latency_us.is_empty()).then(|| latency.latency_ms(q));
    Ok(FloorSummary {
        fanout: args.fanout,
        bitrate,
        pacing: args.pacing,
        idle_sinks: args.idle_sinks,
        packet_size: args.packet_size,
        sent,
        forwarded,
        received: got,
        egress_pps: egress,
        forwarder_cpu_cores: cores,
        floor_pps_per_core: if cores > 0.0 { egress / cores } else { 0.0 },
        loss: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(got) as f64 / expected as f64
        },
        p50_added_ms: added(0.5),
        p99_added_ms: added(0.99),
    })
}

/// Sinks read from a thread that polls them all and sleeps 200 µs when
/// they are empty: no delivery ever wakes a reader.
fn idle_reader(
    sinks: Vec<UdpSocket>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for s in &sinks {
            let _ = s.set_nonblocking(true);
        }
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let mut any = false;
            for s in &sinks {
                while s.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                    any = true;
                }
            }
            if !any {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

/// Sinks read as the load generator reads a viewer's socket: receive
/// stamps on, one glommio task per socket waiting (io_uring peek) until a
/// datagram is there, then draining it without waiting.
fn waiting_reader(
    sinks: Vec<UdpSocket>,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    latency: Arc<Mutex<Totals>>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let placement = match core {
        Some(c) => glommio::Placement::Fixed(c),
        None => glommio::Placement::Unbound,
    };
    let handle = glommio::LocalExecutorBuilder::new(placement)
        .name("floor-sinks")
        .spawn(move || async move {
            let mut tasks = Vec::new();
            let local = Rc::new(RefCell::new(Totals::default()));
            for socket in sinks {
                let _ = crate::rxstamp::enable(&socket);
                let Ok(reader) = socket.try_clone() else {
                    continue;
                };
                let _ = reader.set_nonblocking(true);
                // SAFETY: a bound UDP socket we own; glommio takes it over.
                let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
                let received = received.clone();
                let local = local.clone();
                tasks.push(glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 2048];
                    while rx.peek_from(&mut buf).await.is_ok() {
                        while let Ok((n, _, stamp)) = crate::rxstamp::recv(&reader, &mut buf) {
                            received.fetch_add(1, Ordering::Relaxed);
                            let arrival = stamp.map(|t| {
                                let (real, mono) = (
                                    crate::rxstamp::realtime_ns(),
                                    crate::rxstamp::monotonic_ns(),
                                );
                                crate::rxstamp::to_monotonic(t, real, mono)
                            });
                            record_added(&mut local.borrow_mut(), &buf[..n], arrival);
                        }
                    }
                }));
            }
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            // Dropping the tasks cancels the pending receives.
            drop(tasks);
            if let Ok(mut all) = latency.lock() {
                all.merge(&local.borrow());
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let _ = handle.join();
    }))
}

fn core_pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity only
    // touch the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Floor arguments for a short unpinned run.
    fn args(
        fanout: usize,
        rate: u64,
        bitrate: Option<&str>,
        ms: u64,
        idle_sinks: bool,
    ) -> FloorArgs {
        FloorArgs {
            fanout,
            packet_size: 1150,
            rate,
            bitrate: bitrate.map(str::to_string),
            pacing: 0.0,
            duration: Duration::from_millis(ms),
            core: None,
            idle_sinks,
            sink_core: None,
        }
    }

    #[test]
    fn send_time_round_trips() {
        let mut packet = vec![0x80u8; 1150];
        stamp_sent(&mut packet, 1_700_000_000_123_456_789);
        assert_eq!(sent_at(&packet), Some(1_700_000_000_123_456_789));
        // The RTP-looking first byte stays.
        assert_eq!(packet[0], 0x80);
        assert_eq!(sent_at(&packet[..11]), None);
    }

    #[test]
    fn added_latency_needs_both_stamps() {
        let mut packet = vec![0u8; 64];
        stamp_sent(&mut packet, 5_000_000);
        let mut t = Totals::default();
        record_added(&mut t, &packet, Some(5_250_000));
        record_added(&mut t, &packet, None);
        record_added(&mut t, &packet[..8], Some(9_000_000));
        assert_eq!(t.latency_us.len(), 1);
        assert!((t.latency_ms(0.5) - 0.25).abs() < 0.001);
        // An arrival stamp before the send time (clock step) counts as the
        // histogram's lowest value, not as a wrapped huge one.
        record_added(&mut t, &packet, Some(4_000_000));
        assert!(t.latency_ms(1.0) < 1.0);
    }

    #[test]
    fn forwards_to_every_sink_on_loopback() {
        let s = run(FloorArgs {
            packet_size: 200,
            ..args(4, 500, None, 400, false)
        })
        .expect("floor runs");
        assert!(s.sent > 0);
        assert_eq!(s.forwarded, s.sent * 4);
        assert_eq!(s.received, s.forwarded);
        assert!(s.p99_added_ms.is_some());
        assert!(s.floor_pps_per_core > 0.0);
    }

    #[test]
    fn a_publisher_shaped_input_forwards_every_packet() {
        let s = run(args(3, 0, Some("1.5M"), 500, false)).expect("floor runs");
        // Half a second of the plan: a keyframe (17 packets), 14 frames of
        // 6 and 25 audio packets, give or take the last tick.
        assert!((100..=140).contains(&s.sent), "sent {}", s.sent);
        assert_eq!(s.bitrate, Some(1_500_000));
        assert_eq!(s.received, s.sent * 3);
    }

    #[test]
    fn a_bad_bitrate_is_refused() {
        let err = run(args(1, 0, Some("fast"), 10, true)).unwrap_err();
        assert!(err.contains("--bitrate"), "{err}");
    }
}
