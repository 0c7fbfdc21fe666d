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

use super::schedule::{MediaPlan, OutPacket, Schedule};
use super::signal::SignalRequest;
use crate::accounting::{StreamAccount, Totals};
use crate::payload::{self, Probe};
use crate::url::HttpUrl;

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
    /// The publishers are RTMP encoders: viewers negotiate H.264, skip the
    /// parameter sets before keyframes and count the transcoded audio
    /// without checking it.
    pub rtmp: bool,
}

struct PublisherState {
    index: u32,
    schedule: Schedule,
}

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
    rtmp: bool,
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
                Output::Event(ClientEvent::Media { payload, kind, .. }) => {
                    let Some(viewer) = peer.viewer.as_mut() else {
                        continue;
                    };
                    if self.rtmp {
                        // SPS and PPS (a STAP-A) before each keyframe, and
                        // Opus transcoded from the encoder's AAC: sent to
                        // the viewer, not probes.
                        let params = payload.first().map(|b| b & 0x1f) == Some(24);
                        if kind == MediaKind::Audio || params {
                            self.totals.unchecked += 1;
                            continue;
                        }
                    }
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
        let sent_ns = self.now_ns(now);
        let Some(p) = self.peers[idx].publisher.as_mut() else {
            return;
        };
        let mut packets: Vec<OutPacket> = Vec::new();
        let index = p.index;
        p.schedule.due(now, &mut packets);
        for p in packets {
            let probe = Probe {
                publisher: index,
                kind: p.kind,
                seq: p.seq,
                sent_ns,
            };
            let mut buf = std::mem::take(&mut self.buf);
            payload::encode(&probe, p.size, &mut buf);
            if self.peers[idx]
                .client
                .send(now, p.kind, p.seq, p.rtp_time, p.marker, &buf)
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
            unchecked: self.totals.unchecked,
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
        rtmp: setup.rtmp,
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
        let video = if setup.rtmp {
            corecast_media::Codec::H264
        } else {
            corecast_media::Codec::Vp8
        };
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
                video,
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
    video: corecast_media::Codec,
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
    } else if video == corecast_media::Codec::Vp8 {
        Client::viewer(&config, now, local)
    } else {
        Client::with_video_codec(&config, now, local, false, video)
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
            publisher: publisher.then(|| PublisherState {
                index: publisher_index,
                schedule: Schedule::new(plan, now),
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
