//! One generator shard: a glommio executor that drives many WebRTC peers,
//! each on its own UDP socket (its own 4-tuple, so the server spreads them
//! over its shards the way it spreads real clients).
//!
//! Tasks: one receive task per peer, one ticker that sends the publishers'
//! media, gives every peer its str0m time input and hands capped viewers
//! the datagrams their link releases, one command task that adds peers,
//! and one reporter that sends a [`ShardReport`] ten times a second.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corecast_media::MediaKind;
use corecast_webrtc::{Client, ClientEvent, EndpointConfig, Output};
use glommio::{LocalExecutorBuilder, Placement};

use super::cap::{LinkCap, Offer};
use super::schedule::{MediaPlan, OutPacket, Schedule};
use super::signal::SignalRequest;
use crate::accounting::{LayerRuns, StreamAccount, Totals};
use crate::payload::{self, LayeredProbe, Probe};
use crate::url::HttpUrl;

/// RIDs of a simulcast publisher's layers, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// How often publishers' media and str0m time inputs are handled.
const TICK: Duration = Duration::from_millis(1);

/// How often a shard reports (session counts are only as precise as this).
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

pub enum ShardCmd {
    AddPublisher { index: u32, to: Target },
    AddViewer { publisher: u32, to: Target },
    Stop,
}

/// Where a peer sets up its session.
#[derive(Debug, Clone)]
pub enum Target {
    /// A WHIP or WHEP URL: the peer POSTs its offer.
    Whip(HttpUrl),
    /// A stream of a Janus VideoRoom, at Janus's API root.
    Janus { api: HttpUrl, stream: String },
}

/// A session to end when the run stops.
enum Session {
    Whip(HttpUrl),
    Janus(HttpUrl),
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
    /// Each viewer's downlink is capped at this many bits per second.
    pub viewer_cap: Option<u64>,
}

struct PublisherState {
    index: u32,
    schedule: Schedule,
}

struct ViewerState {
    posted_at: Instant,
    joined: bool,
    streams: HashMap<(u32, bool), StreamAccount>,
    /// Simulcast video, per publisher.
    layered: HashMap<u32, LayerRuns>,
    /// The capped downlink (`--viewer-cap`).
    cap: Option<LinkCap<Arrived>>,
}

/// A datagram waiting in a capped link's queue.
struct Arrived {
    data: Vec<u8>,
    from: SocketAddr,
    /// The kernel's arrival stamp at the viewer's socket.
    arrival_ns: Option<u64>,
}

struct Peer {
    client: Client,
    tx: UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    /// The latest time given to the client's str0m (it must not go back).
    last_input: Instant,
    session: Session,
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
    viewer_cap: Option<u64>,
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
                Output::Event(ClientEvent::LayerKeyframeRequest(layer)) => {
                    if let Some(p) = peer.publisher.as_mut() {
                        p.schedule.request_keyframe(layer);
                    }
                }
                Output::Event(ClientEvent::Media {
                    payload,
                    kind,
                    seq: rtp_seq,
                    ..
                }) => {
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
                    match payload::decode_any(&payload) {
                        Ok(decoded) => {
                            let probe = decoded.probe;
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
                            match decoded.layered {
                                Some(l) => viewer
                                    .layered
                                    .entry(probe.publisher)
                                    .or_default()
                                    .on_packet(
                                        l.layer,
                                        probe.seq,
                                        rtp_seq,
                                        l.keyframe_start(),
                                        transit,
                                    ),
                                None => viewer
                                    .streams
                                    .entry((probe.publisher, probe.kind == MediaKind::Video))
                                    .or_default()
                                    .on_packet(probe.seq, transit),
                            }
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
            let client = &mut self.peers[idx].client;
            let framed = self.plan.simulcast || self.plan.vp8_frames;
            let sent = if framed && p.kind == MediaKind::Video {
                let layered = LayeredProbe {
                    probe,
                    layer: p.layer,
                    frame_start: p.frame_start,
                    keyframe: p.keyframe,
                    picture_id: p.picture_id,
                };
                payload::encode_layered(&layered, p.size, &mut buf);
                if self.plan.simulcast {
                    let layer = usize::from(p.layer);
                    client.send_layer(now, layer, p.seq, p.rtp_time, p.marker, &buf)
                } else {
                    client.send(now, p.kind, p.seq, p.rtp_time, p.marker, &buf)
                }
            } else {
                payload::encode(&probe, p.size, &mut buf);
                client.send(now, p.kind, p.seq, p.rtp_time, p.marker, &buf)
            };
            if sent {
                self.totals.sent += 1;
            }
            self.buf = buf;
            self.drain(idx, now);
        }
    }

    /// Hands one datagram that arrived at `idx`'s socket to its str0m;
    /// `arrival_ns`: the kernel's arrival stamp. The client receives it at
    /// that time, so that its congestion-control feedback reports when the
    /// datagram arrived, not when this shard got to it (never earlier than
    /// a time the client already saw). A capped link's queued datagram is
    /// received when the link releases it (`now`).
    fn receive(
        &mut self,
        idx: usize,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        arrival_ns: Option<u64>,
        queued: bool,
    ) {
        self.arrival_ns = arrival_ns;
        let stamp = arrival_ns
            .filter(|_| !queued)
            .map(|ns| self.epoch + Duration::from_nanos(ns));
        let peer = &mut self.peers[idx];
        let at = stamp.unwrap_or(now).min(now).max(peer.last_input);
        peer.last_input = at;
        let _ = peer.client.handle_receive(at, from, peer.local, data);
        self.drain(idx, now);
        self.arrival_ns = None;
    }

    /// A datagram arrived at `idx`'s socket: through its capped link, if
    /// it has one, else straight in.
    fn arrive(
        &mut self,
        idx: usize,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        arrival_ns: Option<u64>,
    ) {
        if self.peers[idx].viewer.is_some() {
            self.totals.viewer_rx_bytes += data.len() as u64;
        }
        let cap = self.peers[idx].viewer.as_mut().and_then(|v| v.cap.as_mut());
        let Some(cap) = cap else {
            return self.receive(idx, now, from, data, arrival_ns, false);
        };
        let arrived = Arrived {
            data: data.to_vec(),
            from,
            arrival_ns,
        };
        if let Offer::Pass(a) = cap.offer(now, data.len(), arrived) {
            self.receive(idx, now, a.from, &a.data, a.arrival_ns, false);
        }
    }

    /// Hands a capped viewer the datagrams its link releases by `now`.
    fn release(&mut self, idx: usize, now: Instant) {
        loop {
            let next = self.peers[idx]
                .viewer
                .as_mut()
                .and_then(|v| v.cap.as_mut())
                .and_then(|c| c.pop(now));
            let Some(a) = next else {
                return;
            };
            self.receive(idx, now, a.from, &a.data, a.arrival_ns, true);
        }
    }

    fn tick(&mut self, now: Instant) {
        for idx in 0..self.peers.len() {
            if self.peers[idx].publisher.is_some() && self.peers[idx].client.is_connected() {
                self.peers[idx].last_input = now;
                self.send_media(idx, now);
            }
            let queueing = self.peers[idx]
                .viewer
                .as_ref()
                .and_then(|v| v.cap.as_ref())
                .is_some_and(LinkCap::is_queueing);
            if queueing {
                self.release(idx, now);
            }
            if now >= self.peers[idx].next_timeout {
                self.peers[idx].last_input = now;
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
            viewer_rx_bytes: self.totals.viewer_rx_bytes,
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
                for runs in v.layered.values() {
                    runs.add_to(&mut totals);
                }
                totals.cap_dropped += v.cap.as_ref().map_or(0, LinkCap::dropped);
            }
            if let Some(p) = &p.publisher {
                totals.requested_keyframes += p.schedule.requested_keyframes();
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
        viewer_cap: setup.viewer_cap,
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
        let (publisher, publisher_index, to) = match cmd {
            ShardCmd::Stop => break,
            ShardCmd::AddPublisher { index, to } => (true, index, to),
            ShardCmd::AddViewer { publisher, to } => (false, publisher, to),
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
                to,
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
        let _ = setup.signal.try_send(match &p.session {
            Session::Whip(url) => SignalRequest::Delete {
                url: url.clone(),
                token: setup.token.clone(),
            },
            Session::Janus(session) => SignalRequest::JanusDestroy {
                session: session.clone(),
            },
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
    to: Target,
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
    let simulcast = state.borrow().plan.simulcast;
    let set_up = match to {
        Target::Janus { api, stream } if !publisher => {
            janus_viewer(&config, now, local, &signal, api, stream).await
        }
        to => {
            let made = if publisher && simulcast {
                Client::simulcast_publisher(&config, now, local, &SIMULCAST_RIDS)
            } else if publisher {
                Client::publisher(&config, now, local)
            } else if video == corecast_media::Codec::Vp8 {
                Client::viewer(&config, now, local)
            } else {
                Client::with_video_codec(&config, now, local, false, video)
            };
            match made {
                Ok((client, offer)) => offer_to(client, offer, to, token, &signal).await,
                Err(_) => Err("offer".to_string()),
            }
        }
    };
    let (client, session) = match set_up {
        Ok(x) => x,
        Err(e) => return fail(&state, &e),
    };
    let idx = {
        let mut st = state.borrow_mut();
        let plan = st.plan;
        let cap = st.viewer_cap;
        st.peers.push(Peer {
            client,
            tx,
            local,
            next_timeout: now,
            last_input: now,
            session,
            publisher: publisher.then(|| PublisherState {
                index: publisher_index,
                schedule: Schedule::new(plan, now),
            }),
            viewer: (!publisher).then_some(ViewerState {
                posted_at: now,
                joined: false,
                streams: HashMap::new(),
                layered: HashMap::new(),
                cap: cap.map(LinkCap::new),
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
            let arrival_ns = stamp
                .filter(|_| stamped)
                .map(|t| crate::rxstamp::to_monotonic(t, realtime, since_epoch));
            st.arrive(idx, now, from, &buf[..n], arrival_ns);
        }
    }
}

/// Sends a client's offer where `to` says, applies the answer; returns the
/// client and the session to end at the stop.
async fn offer_to(
    mut client: Client,
    offer: String,
    to: Target,
    token: Option<String>,
    signal: &flume::Sender<SignalRequest>,
) -> Result<(Client, Session), String> {
    let (reply, answered) = flume::bounded(1);
    let janus = matches!(to, Target::Janus { .. });
    let request = match to {
        Target::Whip(url) => SignalRequest::Post {
            url,
            offer,
            token,
            reply,
        },
        Target::Janus { api, stream } => SignalRequest::JanusPublish {
            url: api,
            stream,
            offer,
            reply,
        },
    };
    signal
        .send_async(request)
        .await
        .map_err(|_| "signalling stopped".to_string())?;
    let (answer, session) = answered
        .recv_async()
        .await
        .map_err(|_| "signalling stopped".to_string())??;
    client.accept_answer(&answer).map_err(|e| e.to_string())?;
    let session = if janus {
        Session::Janus(session)
    } else {
        Session::Whip(session)
    };
    Ok((client, session))
}

/// A viewer of a Janus room: Janus offers, the client answers.
async fn janus_viewer(
    config: &EndpointConfig,
    now: Instant,
    local: SocketAddr,
    signal: &flume::Sender<SignalRequest>,
    api: HttpUrl,
    stream: String,
) -> Result<(Client, Session), String> {
    let stopped = |_| "signalling stopped".to_string();
    let (reply, offered) = flume::bounded(1);
    let request = SignalRequest::JanusSubscribe {
        url: api,
        stream,
        reply,
    };
    signal.send_async(request).await.map_err(stopped)?;
    let (offer, handle) = offered
        .recv_async()
        .await
        .map_err(|_| "signalling stopped")??;
    let (client, answer) =
        Client::answering_viewer(config, now, local, &offer).map_err(|e| e.to_string())?;
    let session = handle.session.clone();
    let (reply, started) = flume::bounded(1);
    let request = SignalRequest::JanusStart {
        handle,
        answer,
        reply,
    };
    signal.send_async(request).await.map_err(stopped)?;
    started
        .recv_async()
        .await
        .map_err(|_| "signalling stopped")??;
    Ok((client, Session::Janus(session)))
}
