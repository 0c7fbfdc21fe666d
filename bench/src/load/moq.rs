//! MoQ viewers for `load --moq`: corecast-moq's `WatchClient` (moq-net's
//! client over a quinn-proto connection, counting frames instead of
//! keeping them), each with a UDP socket of its own, all on one thread
//! pinned beside the generator's shards. A viewer is up once it has
//! received a video frame.
//!
//! What a MoQ viewer gets is frames (hang), not RTP packets, so it is
//! measured by what reached its socket (UDP payload bytes, as
//! `viewer_rx_bps` is for WebRTC viewers) and by the frames it received;
//! the probes inside the frames carry no per-packet latency here.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corecast_moq::client::WatchClient;

/// What the MoQ viewers received, summed over them.
#[derive(Debug, Default, Clone, Copy)]
pub struct MoqTotals {
    /// Viewers that received a video frame.
    pub up: u64,
    /// Viewers whose client gave up (a setup error, the connection lost).
    pub failed: u64,
    pub video_frames: u64,
    pub video_bytes: u64,
    pub audio_frames: u64,
    /// UDP payload bytes that reached the viewers' sockets.
    pub rx_bytes: u64,
}

/// The running viewers.
pub struct MoqViewers {
    stop: Arc<AtomicBool>,
    totals: Arc<Mutex<MoqTotals>>,
    handle: JoinHandle<()>,
}

impl MoqViewers {
    pub fn totals(&self) -> MoqTotals {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

struct Viewer {
    socket: UdpSocket,
    client: WatchClient,
    rx_bytes: u64,
}

/// Starts `rooms.len()` viewers, viewer i watching `rooms[i]` at `server`,
/// pinning the certificate `fingerprint`; their thread on `core` if given.
pub fn start(
    rooms: Vec<String>,
    server: SocketAddr,
    fingerprint: String,
    local_ip: IpAddr,
    core: Option<usize>,
) -> Result<MoqViewers, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Mutex::new(MoqTotals::default()));
    let (s, t) = (stop.clone(), totals.clone());
    // The clients are not Send: they are made on their thread.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("moq-viewers".into())
        .spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
            }
            match viewers(&rooms, server, &fingerprint, local_ip) {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    drive(v, server, &s, &t);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv()
        .map_err(|_| "the MoQ viewers' thread died".to_string())??;
    Ok(MoqViewers {
        stop,
        totals,
        handle,
    })
}

fn viewers(
    rooms: &[String],
    server: SocketAddr,
    fingerprint: &str,
    local_ip: IpAddr,
) -> Result<Vec<Viewer>, String> {
    let now = Instant::now();
    rooms
        .iter()
        .map(|room| {
            let socket = UdpSocket::bind((local_ip, 0)).map_err(|e| e.to_string())?;
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            let local = socket.local_addr().map_err(|e| e.to_string())?;
            let client = WatchClient::new(now, fingerprint, local, server, room)?.count_only();
            Ok(Viewer {
                socket,
                client,
                rx_bytes: 0,
            })
        })
        .collect()
}

/// Moves every viewer's datagrams and timers until told to stop; sums
/// their counters every 100 ms.
fn drive(
    mut viewers: Vec<Viewer>,
    server: SocketAddr,
    stop: &AtomicBool,
    totals: &Mutex<MoqTotals>,
) {
    let mut buf = vec![0u8; 2048];
    let now = Instant::now();
    for v in &mut viewers {
        v.client.pump(now);
        while let Some(t) = v.client.quic.poll_transmit(now) {
            let _ = v.socket.send_to(&t.contents, server);
        }
    }
    let mut last_sum = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut busy = false;
        for v in &mut viewers {
            let mut moved = false;
            while let Ok((n, from)) = v.socket.recv_from(&mut buf) {
                v.rx_bytes += n as u64;
                v.client.quic.handle_datagram(now, from, &buf[..n]);
                moved = true;
            }
            if v.client.quic.poll_timeout().is_some_and(|t| t <= now) {
                v.client.quic.handle_timeout(now);
                moved = true;
            }
            if moved {
                v.client.pump(now);
                while let Some(t) = v.client.quic.poll_transmit(now) {
                    let _ = v.socket.send_to(&t.contents, server);
                }
                busy = true;
            }
        }
        if last_sum.elapsed() >= Duration::from_millis(100) {
            last_sum = Instant::now();
            *totals.lock().unwrap_or_else(|e| e.into_inner()) = sum(&viewers);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn sum(viewers: &[Viewer]) -> MoqTotals {
    let mut t = MoqTotals::default();
    for v in viewers {
        let w = v.client.watched();
        t.up += u64::from(w.video_frames > 0);
        t.failed += u64::from(w.error.is_some() || v.client.quic.is_drained());
        t.video_frames += w.video_frames;
        t.video_bytes += w.video_bytes;
        t.audio_frames += w.audio_frames;
        t.rx_bytes += v.rx_bytes;
    }
    t
}
