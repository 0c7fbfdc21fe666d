//! One generator shard: a glommio executor that drives many WebRTC peers,
//! each on its own UDP socket (its own 4-tuple, so the server spreads them
//! over its shards the way it spreads real clients).
//!
//! Tasks: one receive task per peer, one ticker that sends the publishers'
//! media and gives every peer its str0m time input, one command task that
//! adds peers, and one reporter that sends a [`ShardReport`] ten times a second.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corecast_media::MediaKind;
use corecast_webrtc::{Client, ClientEvent, EndpointConfig, Output};
use glommio::{LocalExecutorBuilder, Placement};

use super::pacer::Pacer;
use super::signal::SignalRequest;
use crate::accounting::{StreamAccount, Totals};
use crate::payload::{self, Probe};
use crate::url::HttpUrl;

/// What publishers send.
#[derive(Debug, Clone, Copy)]
pub struct MediaPlan {
    /// Video bits per second.
    pub video_bitrate: u64,
    pub fps: u32,
    /// Largest RTP payload, in bytes.
    pub max_payload: usize,
    /// Every this many frames is a keyframe, three times the size.
    pub keyframe_every: u32,
    /// Audio packets per second and their payload size.
    pub audio_pps: u32,
    pub audio_payload: usize,
    /// Video pacing rate as a multiple of `video_bitrate`; 0 = no pacing.
    pub pacing: f64,
}

impl MediaPlan {
    /// Payload sizes of frame number `frame`.
    pub fn frame_packets(&self, frame: u64) -> Vec<usize> {
        let mut bytes = (self.video_bitrate / 8 / u64::from(self.fps.max(1))) as usize;
        if self.keyframe_every > 0 && frame.is_multiple_of(u64::from(self.keyframe_every)) {
            bytes *= 3;
        }
        let bytes = bytes.max(payload::HEADER);
        let max = self.max_payload.max(payload::HEADER);
        let n = bytes.div_ceil(max);
        let mut sizes = vec![max; n];
        let last = bytes - max * (n - 1);
        sizes[n - 1] = last.max(payload::HEADER);
        sizes
    }
}

/// How often publishers' media and str0m time inputs are handled.
const TICK: Duration = Duration::from_millis(1);

/// How often a shard reports (session counts are only as precise as this).
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

pub enum ShardCmd {
    AddPublisher { index: u32, url: HttpUrl },
    AddViewer { publisher: u32, url: HttpUrl },
    Stop,
}

/// A shard's counters: `sent`, the stream counters, `sessions_up` and
/// `corrupted` are cumulative; the histograms hold this interval's samples.
pub struct ShardReport {
    pub shard: usize,
    pub totals: Totals,
}

pub struct ShardSetup {
    pub id: usize,
    pub core: Option<usize>,
    pub local_ip: IpAddr,
    pub token: Option<String>,
    pub plan: MediaPlan,
    pub epoch: Instant,
    pub commands: flume::Receiver<ShardCmd>,
    pub reports: flume::Sender<ShardReport>,
    pub signal: flume::Sender<SignalRequest>,
}

struct PublisherState {
    index: u32,
    frame: u64,
    video_seq: u64,
    audio_seq: u64,
    next_video: Instant,
    next_audio: Instant,
    /// Video packets waiting for the pacer (with `pacing` > 0).
    pacer: Option<Pacer<OutPacket>>,
}

/// One RTP packet a publisher sends: kind, sequence number, RTP time,
/// marker, payload size.
type OutPacket = (MediaKind, u64, u32, bool, usize);

struct ViewerState {
    posted_at: Instant,
    joined: bool,
    streams: HashMap<(u32, bool), StreamAccount>,
}

struct Peer {
    client: Client,
    tx: UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    location: HttpUrl,
    publisher: Option<PublisherState>,
    viewer: Option<ViewerState>,
}

struct State {
    id: usize,
    epoch: Instant,
    /// Arrival stamp of the datagram being handled (ns since `epoch`).
    arrival_ns: Option<u64>,
    plan: MediaPlan,
    peers: Vec<Peer>,
    totals: Totals,
    buf: Vec<u8>,
}

pub fn spawn(setup: ShardSetup) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let placement = setup.core.map_or(Placement::Unbound, Placement::Fixed);
    LocalExecutorBuilder::new(placement)
        .name(&format!("gen-{}", setup.id))
        .spawn(move || run(setup))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

impl State {
    fn now_ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Drains one peer's output: datagrams out, events accounted.
    fn drain(&mut self, idx: usize, now: Instant) {
        let now_ns = self.now_ns(now);
        let peer = &mut self.peers[idx];
        loop {
            match peer.client.poll_output(now) {
                Output::Transmit(t) => {
                    let _ = peer.tx.send_to(&t.contents, t.destination);
                }
                Output::Timeout(at) => {
                    peer.next_timeout = at;
                    return;
                }
                Output::Event(ClientEvent::Media { payload, .. }) => {
                    let Some(viewer) = peer.viewer.as_mut() else {
                        continue;
                    };
                    match payload::decode(&payload) {
                        Ok(probe) => {
                            if !viewer.joined {
                                viewer.joined = true;
                                self.totals.sessions_up += 1;
                                let join = now.saturating_duration_since(viewer.posted_at);
                                self.totals.record_join(join.as_micros() as u64);
                            }
                            let arrived = self.arrival_ns.unwrap_or(now_ns);
                            let transit = arrived as i64 - probe.sent_ns as i64;
                            self.totals.record_latency((transit.max(0) / 1000) as u64);
                            let delivered = now_ns as i64 - probe.sent_ns as i64;
                            self.totals
                                .record_delivered((delivered.max(0) / 1000) as u64);
                            viewer
                                .streams
                                .entry((probe.publisher, probe.kind == MediaKind::Video))
                                .or_default()
                                .on_packet(probe.seq, transit);
                        }
                        Err(_) => self.totals.corrupted += 1,
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Sends what is due from one publisher.
    fn send_media(&mut self, idx: usize, now: Instant) {
        let plan = self.plan;
        let sent_ns = self.now_ns(now);
        let Some(p) = self.peers[idx].publisher.as_mut() else {
            return;
        };
        let mut packets: Vec<OutPacket> = Vec::new();
        let index = p.index;
        if now >= p.next_video {
            let sizes = plan.frame_packets(p.frame);
            let ts = (p.frame * 90_000 / u64::from(plan.fps.max(1))) as u32;
            let n = sizes.len();
            for (i, size) in sizes.into_iter().enumerate() {
                let packet = (MediaKind::Video, p.video_seq, ts, i + 1 == n, size);
                match p.pacer.as_mut() {
                    Some(pacer) => pacer.push(size, packet),
                    None => packets.push(packet),
                }
                p.video_seq += 1;
            }
            p.frame += 1;
            p.next_video += Duration::from_secs(1) / plan.fps.max(1);
            if p.next_video < now {
                p.next_video = now;
            }
        }
        if plan.audio_pps > 0 && now >= p.next_audio {
            let ts = (p.audio_seq * 48_000 / u64::from(plan.audio_pps)) as u32;
            packets.push((MediaKind::Audio, p.audio_seq, ts, false, plan.audio_payload));
            p.audio_seq += 1;
            p.next_audio += Duration::from_secs(1) / plan.audio_pps;
            if p.next_audio < now {
                p.next_audio = now;
            }
        }
        if let Some(pacer) = p.pacer.as_mut() {
            while let Some(packet) = pacer.pop(now) {
                packets.push(packet);
            }
        }
        for (kind, seq, ts, marker, size) in packets {
            let probe = Probe {
                publisher: index,
                kind,
                seq,
                sent_ns,
            };
            let mut buf = std::mem::take(&mut self.buf);
            payload::encode(&probe, size, &mut buf);
            if self.peers[idx]
                .client
                .send(now, kind, seq, ts, marker, &buf)
            {
                self.totals.sent += 1;
            }
            self.buf = buf;
            self.drain(idx, now);
        }
    }

    fn tick(&mut self, now: Instant) {
        for idx in 0..self.peers.len() {
            if self.peers[idx].publisher.is_some() && self.peers[idx].client.is_connected() {
                self.send_media(idx, now);
            }
            if now >= self.peers[idx].next_timeout {
                self.peers[idx].client.handle_timeout(now);
                self.drain(idx, now);
            }
        }
    }

    fn report(&mut self) -> ShardReport {
        let mut totals = Totals {
            sent: self.totals.sent,
            corrupted: self.totals.corrupted,
            sessions_up: self.totals.sessions_up,
            session_failures: self.totals.session_failures,
            latency_us: self.totals.latency_us.clone(),
            delivered_us: self.totals.delivered_us.clone(),
            join_us: self.totals.join_us.clone(),
            ..Totals::default()
        };
        for p in &self.peers {
            if let Some(v) = &p.viewer {
                for s in v.streams.values() {
                    totals.add_stream(s);
                }
            }
        }
        self.totals.latency_us.reset();
        self.totals.delivered_us.reset();
        self.totals.join_us.reset();
        ShardReport {
            shard: self.id,
            totals,
        }
    }
}

async fn run(setup: ShardSetup) {
    let state = Rc::new(RefCell::new(State {
        id: setup.id,
        epoch: setup.epoch,
        arrival_ns: None,
        plan: setup.plan,
        peers: Vec::new(),
        totals: Totals::default(),
        buf: Vec::with_capacity(2048),
    }));
    let config = EndpointConfig::new(Vec::new());
    let stop = Rc::new(std::cell::Cell::new(false));

    let ticker = {
        let state = state.clone();
        let stop = stop.clone();
        glommio::spawn_local(async move {
            while !stop.get() {
                glommio::timer::sleep(TICK).await;
                state.borrow_mut().tick(Instant::now());
            }
        })
    };
    let reporter = {
        let state = state.clone();
        let stop = stop.clone();
        let reports = setup.reports.clone();
        glommio::spawn_local(async move {
            while !stop.get() {
                glommio::timer::sleep(REPORT_INTERVAL).await;
                let report = state.borrow_mut().report();
                if reports.send_async(report).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut receivers = Vec::new();
    while let Ok(cmd) = setup.commands.recv_async().await {
        let (publisher, publisher_index, url) = match cmd {
            ShardCmd::Stop => break,
            ShardCmd::AddPublisher { index, url } => (true, index, url),
            ShardCmd::AddViewer { publisher, url } => (false, publisher, url),
        };
        let state = state.clone();
        let config = config.clone();
        let signal = setup.signal.clone();
        let token = setup.token.clone();
        let local_ip = setup.local_ip;
        receivers.push(glommio::spawn_local(async move {
            add_peer(
                state,
                config,
                signal,
                token,
                local_ip,
                publisher,
                publisher_index,
                url,
            )
            .await;
        }));
    }

    // Stop: final report, DELETE every session.
    stop.set(true);
    let _ = ticker.await;
    let _ = reporter.await;
    let report = state.borrow_mut().report();
    let _ = setup.reports.send_async(report).await;
    for p in state.borrow_mut().peers.iter_mut() {
        p.client.close();
        let _ = setup.signal.try_send(SignalRequest::Delete {
            url: p.location.clone(),
            token: setup.token.clone(),
        });
    }
    for r in receivers {
        r.cancel().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn add_peer(
    state: Rc<RefCell<State>>,
    config: EndpointConfig,
    signal: flume::Sender<SignalRequest>,
    token: Option<String>,
    local_ip: IpAddr,
    publisher: bool,
    publisher_index: u32,
    url: HttpUrl,
) {
    let fail = |state: &Rc<RefCell<State>>, why: &str| {
        state.borrow_mut().totals.session_failures += 1;
        eprintln!("session failed: {why}");
    };
    let Ok(socket) = UdpSocket::bind(SocketAddr::new(local_ip, 0)) else {
        return fail(&state, "bind");
    };
    let (Ok(local), Ok(()), Ok(tx)) = (
        socket.local_addr(),
        socket.set_nonblocking(true),
        socket.try_clone(),
    ) else {
        return fail(&state, "socket setup");
    };
    let now = Instant::now();
    let made = if publisher {
        Client::publisher(&config, now, local)
    } else {
        Client::viewer(&config, now, local)
    };
    let Ok((mut client, offer)) = made else {
        return fail(&state, "offer");
    };
    let (reply_tx, reply_rx) = flume::bounded(1);
    let request = SignalRequest::Post {
        url,
        offer,
        token,
        reply: reply_tx,
    };
    if signal.send_async(request).await.is_err() {
        return fail(&state, "signalling stopped");
    }
    let (answer, location) = match reply_rx.recv_async().await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return fail(&state, &e),
        Err(_) => return fail(&state, "signalling stopped"),
    };
    if let Err(e) = client.accept_answer(&answer) {
        return fail(&state, &e.to_string());
    }
    let idx = {
        let mut st = state.borrow_mut();
        let plan = st.plan;
        st.peers.push(Peer {
            client,
            tx,
            local,
            next_timeout: now,
            location,
            publisher: publisher.then_some(PublisherState {
                index: publisher_index,
                frame: 0,
                video_seq: 0,
                audio_seq: 0,
                next_video: now,
                next_audio: now,
                pacer: (publisher && plan.pacing > 0.0)
                    .then(|| Pacer::new(plan.pacing * plan.video_bitrate as f64, plan.max_payload)),
            }),
            viewer: (!publisher).then_some(ViewerState {
                posted_at: now,
                joined: false,
                streams: HashMap::new(),
            }),
        });
        let idx = st.peers.len() - 1;
        st.drain(idx, Instant::now());
        idx
    };
    // Datagrams are read with their kernel arrival stamp from a clone of
    // the socket; glommio only waits (peek) until one is there.
    let stamped = crate::rxstamp::enable(&socket).is_ok();
    let Ok(reader) = socket.try_clone() else {
        return fail(&state, "socket setup");
    };
    // SAFETY: the fd is a bound UDP socket we own; glommio takes it over.
    let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
    let mut buf = vec![0u8; 2048];
    while rx.peek_from(&mut buf).await.is_ok() {
        loop {
            let (n, from, stamp) = match crate::rxstamp::recv(&reader, &mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            };
            let now = Instant::now();
            let realtime = crate::rxstamp::realtime_ns();
            let mut st = state.borrow_mut();
            let since_epoch = st.now_ns(now);
            st.arrival_ns = stamp
                .filter(|_| stamped)
                .map(|t| crate::rxstamp::to_monotonic(t, realtime, since_epoch));
            let local = st.peers[idx].local;
            let _ = st.peers[idx]
                .client
                .handle_receive(now, from, local, &buf[..n]);
            st.drain(idx, now);
            st.arrival_ns = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_into_packets() {
        let plan = MediaPlan {
            video_bitrate: 1_500_000,
            fps: 30,
            max_payload: 1150,
            keyframe_every: 60,
            audio_pps: 50,
            audio_payload: 100,
            pacing: 0.0,
        };
        // 1.5 Mbit/s at 30 fps is 6250 bytes a frame: 6 packets.
        let p = plan.frame_packets(1);
        assert_eq!(p.len(), 6);
        assert_eq!(p.iter().sum::<usize>(), 6250);
        // A keyframe is three times bigger.
        assert_eq!(plan.frame_packets(0).iter().sum::<usize>(), 18750);
    }
}
