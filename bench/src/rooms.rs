//! `corecast-bench rooms`: conference rooms over the SDK protocol
//! (docs/sdk-protocol.md). `--rooms R` rooms of `--peers P` peers; every peer
//! publishes audio and video and subscribes to every other peer's two
//! tracks, so each packet a peer sends reaches `P - 1` peers.
//!
//! Measured after every subscription is live, over `--duration`: egress
//! packets per second at the peers (and per server core-second with
//! `--server-pid`), added latency (send to receive on this machine's clock,
//! from the probe payloads), loss, and the set-up rate (connect, join and
//! every subscription live, per second).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use corecast_media::MediaKind;
use corecast_webrtc::{EndpointConfig, Output, RoomClient, RoomEvent};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::payload::{decode, encode, Probe};
use crate::procfs;
use crate::url::{request, HttpUrl};

#[derive(Debug, clap::Args)]
pub struct RoomsArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    #[arg(long, default_value_t = 2)]
    pub rooms: usize,
    /// Peers per room (at most 33: a peer has 32 slots per kind).
    #[arg(long, default_value_t = 4)]
    pub peers: usize,
    /// How long to measure once every subscription is live.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Video packets per second of each peer (audio: 50).
    #[arg(long, default_value_t = 100)]
    pub video_pps: u32,
    /// Video payload bytes (audio: 100).
    #[arg(long, default_value_t = 1000)]
    pub payload: usize,
    /// Generator threads (peers are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The address the peers' sockets bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Bearer token (the static `--token`, or a room token valid for every room).
    #[arg(long)]
    pub token: Option<String>,
    /// The server's process id, for its CPU time and peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct RoomsSummary {
    pub rooms: usize,
    pub peers_per_room: usize,
    pub subscriptions: usize,
    /// Connect + join + every subscription live, for all peers.
    pub setup_s: f64,
    pub setup_peers_per_s: f64,
    pub egress_pps: f64,
    pub server_cpu_cores: Option<f64>,
    pub egress_pps_per_core: Option<f64>,
    pub p50_added_ms: f64,
    pub p99_added_ms: f64,
    pub loss: f64,
    pub corrupted: u64,
    pub server_rss_mb: Option<f64>,
}

/// One peer of the generator.
struct Peer {
    room: usize,
    index: usize,
    socket: UdpSocket,
    local: SocketAddr,
    client: RoomClient,
    next_timeout: Instant,
    joined: bool,
    subs_ok: usize,
    live: usize,
    seq: u64,
}

/// What one thread counted in the window.
#[derive(Default)]
struct Counts {
    sent: u64,
    received: u64,
    corrupted: u64,
    latency: Option<Histogram<u64>>,
}

fn http_err(e: impl std::fmt::Display) -> String {
    format!("signalling: {e}")
}

impl Peer {
    fn connect(
        args: &RoomsArgs,
        config: &EndpointConfig,
        room: usize,
        index: usize,
    ) -> Result<Peer, String> {
        let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0)).map_err(|e| e.to_string())?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let slots = args.peers - 1;
        let publish = [("audio", MediaKind::Audio), ("video", MediaKind::Video)];
        let (mut client, offer) = RoomClient::new(config, now, local, &publish, slots, slots)
            .map_err(|e| e.to_string())?;
        let body = client.connect_body(
            &format!("room{room}"),
            &format!("p{index}"),
            &offer,
            json!({}),
        );
        let url = HttpUrl::parse(&args.server)
            .map_err(http_err)?
            .join("/webrtc/connect");
        let r = request(
            &url,
            "POST",
            Some("application/json"),
            args.token.as_deref(),
            body.as_bytes(),
        )
        .map_err(http_err)?;
        if r.status != 201 {
            return Err(format!("connect: {} {}", r.status, r.body.trim()));
        }
        let answer: Value = serde_json::from_str(&r.body).map_err(http_err)?;
        client
            .accept_answer(answer["sdp"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        client.request("join", json!({"protocol": 1}));
        Ok(Peer {
            room,
            index,
            socket,
            local,
            client,
            next_timeout: now,
            joined: false,
            subs_ok: 0,
            live: 0,
            seq: 0,
        })
    }

    /// Reads, times, drains; counts probes when `counts` is given.
    fn pump(&mut self, epoch: Instant, window: Option<(u64, u64)>, counts: &mut Counts) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let now = Instant::now();
            let _ = self.client.handle_receive(now, from, self.local, &buf[..n]);
            self.drain(now, epoch, window, counts);
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            self.client.handle_timeout(now);
            self.drain(now, epoch, window, counts);
        }
    }

    fn drain(
        &mut self,
        now: Instant,
        epoch: Instant,
        window: Option<(u64, u64)>,
        counts: &mut Counts,
    ) {
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(RoomEvent::Message(m)) => {
                    if m["id"] == 1 && m["ok"] == true {
                        self.joined = true;
                    } else if m["ok"] == true && m.get("mid").is_some() {
                        self.subs_ok += 1;
                    } else if m["event"] == "subscription" && m["state"] == "live" {
                        self.live += 1;
                    }
                }
                Output::Event(RoomEvent::Media { payload, .. }) => {
                    let Some((from, to)) = window else { continue };
                    match decode(&payload) {
                        Ok(p) if p.sent_ns >= from && p.sent_ns < to => {
                            counts.received += 1;
                            let now_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
                            if let Some(h) = counts.latency.as_mut() {
                                let _ = h.record(now_ns.saturating_sub(p.sent_ns) / 1000);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => counts.corrupted += 1,
                    }
                }
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
            }
        }
    }

    fn send(&mut self, kind: MediaKind, len: usize, epoch: Instant, buf: &mut Vec<u8>) {
        let now = Instant::now();
        self.seq += 1;
        let probe = Probe {
            publisher: (self.room * 1000 + self.index) as u32,
            kind,
            seq: self.seq,
            sent_ns: now.saturating_duration_since(epoch).as_nanos() as u64,
        };
        encode(&probe, len, buf);
        let (name, clock) = match kind {
            MediaKind::Audio => ("audio", 960),
            MediaKind::Video => ("video", 3000),
        };
        self.client.send(
            now,
            name,
            self.seq,
            (self.seq as u32).wrapping_mul(clock),
            true,
            buf,
        );
    }
}

/// The two points where every thread waits for the others (all joined;
/// all live). A thread that fails still passes both, so none waits forever.
struct Phases<'a> {
    barrier: &'a Barrier,
    passed: usize,
}

impl Phases<'_> {
    fn wait(&mut self) {
        self.barrier.wait();
        self.passed += 1;
    }

    fn fail<T>(&mut self, why: impl Into<String>) -> Result<T, String> {
        while self.passed < 2 {
            self.wait();
        }
        Err(why.into())
    }
}

/// Runs one thread's peers through every phase; `barrier` keeps the
/// threads' phases together.
fn run_thread(
    args: &RoomsArgs,
    mine: Vec<(usize, usize)>,
    barrier: &Barrier,
    epoch: Instant,
    server_pid: Option<u32>,
) -> Result<(Counts, Instant, Option<f64>), String> {
    let config = EndpointConfig::new(vec![]);
    let mut counts = Counts {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Counts::default()
    };
    let mut phases = Phases { barrier, passed: 0 };
    let mut peers = Vec::new();
    for (room, index) in mine {
        match Peer::connect(args, &config, room, index) {
            Ok(p) => peers.push(p),
            Err(e) => return phases.fail(e),
        }
    }
    let pump_all = |peers: &mut Vec<Peer>, counts: &mut Counts, window| {
        for p in peers.iter_mut() {
            p.pump(epoch, window, counts);
        }
    };
    let until = |peers: &mut Vec<Peer>,
                 counts: &mut Counts,
                 limit: Duration,
                 done: &dyn Fn(&Peer) -> bool| {
        let end = Instant::now() + limit;
        while !peers.iter().all(done) {
            if Instant::now() > end {
                return false;
            }
            pump_all(peers, counts, None);
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    };
    if !until(&mut peers, &mut counts, Duration::from_secs(30), &|p| {
        p.joined
    }) {
        return phases.fail("a peer did not join within 30 s");
    }
    phases.wait();
    let n = args.peers;
    for p in peers.iter_mut() {
        for j in (0..n).filter(|j| *j != p.index) {
            for track in ["audio", "video"] {
                p.client.request(
                    "subscribe",
                    json!({"peer": format!("p{j}"), "track": track}),
                );
            }
        }
        p.drain(Instant::now(), epoch, None, &mut counts);
    }
    let want = 2 * (n - 1);
    if !until(&mut peers, &mut counts, Duration::from_secs(30), &|p| {
        p.subs_ok >= want
    }) {
        return phases.fail("subscriptions were not all answered (ok) within 30 s");
    }
    // Media until every subscription is live; then the window.
    let mut buf = Vec::new();
    let video_every = Duration::from_secs(1) / args.video_pps.max(1);
    let audio_every = Duration::from_millis(20);
    let (mut next_video, mut next_audio) = (Instant::now(), Instant::now());
    let mut tick = |peers: &mut Vec<Peer>, counts: &mut Counts, window: Option<(u64, u64)>| {
        let now = Instant::now();
        let in_window = |w: Option<(u64, u64)>| {
            w.is_some_and(|(from, to)| {
                let ns = now.saturating_duration_since(epoch).as_nanos() as u64;
                ns >= from && ns < to
            })
        };
        if now >= next_video {
            next_video += video_every;
            for p in peers.iter_mut() {
                p.send(MediaKind::Video, args.payload, epoch, &mut buf);
                if in_window(window) {
                    counts.sent += 1;
                }
            }
        }
        if now >= next_audio {
            next_audio += audio_every;
            for p in peers.iter_mut() {
                p.send(MediaKind::Audio, 100, epoch, &mut buf);
                if in_window(window) {
                    counts.sent += 1;
                }
            }
        }
        pump_all(peers, counts, window);
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !peers.iter().all(|p| p.live >= want) && Instant::now() < end {
        tick(&mut peers, &mut counts, None);
    }
    if !peers.iter().all(|p| p.live >= want) {
        return phases.fail("subscriptions were not all live within 30 s");
    }
    let live_at = Instant::now();
    phases.wait();
    let from = Instant::now() + Duration::from_millis(200);
    let to = from + args.duration;
    let window = Some((
        from.saturating_duration_since(epoch).as_nanos() as u64,
        to.saturating_duration_since(epoch).as_nanos() as u64,
    ));
    // The server's CPU over the window, read by the thread that has a pid.
    let (mut cpu_from, mut cpu_to) = (None, None);
    while Instant::now() < to + Duration::from_millis(500) {
        tick(&mut peers, &mut counts, window);
        let now = Instant::now();
        if cpu_from.is_none() && now >= from {
            cpu_from = server_pid.and_then(procfs::cpu_seconds).map(|c| (c, now));
        }
        if cpu_to.is_none() && now >= to {
            cpu_to = server_pid.and_then(procfs::cpu_seconds).map(|c| (c, now));
        }
        std::thread::yield_now();
    }
    let cores = match (cpu_from, cpu_to) {
        (Some((a, at)), Some((b, bt))) => Some((b - a) / bt.duration_since(at).as_secs_f64()),
        _ => None,
    };
    Ok((counts, live_at, cores))
}

pub fn run(args: RoomsArgs) -> Result<RoomsSummary, String> {
    if args.peers < 2 || args.peers > 33 {
        return Err("--peers is 2 to 33".into());
    }
    let args = Arc::new(args);
    let threads = args.threads.clamp(1, args.rooms * args.peers);
    let mut plan: Vec<Vec<(usize, usize)>> = vec![Vec::new(); threads];
    for room in 0..args.rooms {
        for index in 0..args.peers {
            plan[(room * args.peers + index) % threads].push((room, index));
        }
    }
    let barrier = Arc::new(Barrier::new(threads));
    let epoch = Instant::now();
    let handles: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(i, mine)| {
            let (args, barrier) = (args.clone(), barrier.clone());
            let pid = args.server_pid.filter(|_| i == 0);
            std::thread::spawn(move || run_thread(&args, mine, &barrier, epoch, pid))
        })
        .collect();
    let mut cores = None;
    let mut total = Counts {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Counts::default()
    };
    let mut live_at = epoch;
    for h in handles {
        let (c, live, cpu) = h
            .join()
            .map_err(|_| "a generator thread panicked".to_string())??;
        cores = cores.or(cpu);
        total.sent += c.sent;
        total.received += c.received;
        total.corrupted += c.corrupted;
        if let (Some(t), Some(h)) = (total.latency.as_mut(), c.latency.as_ref()) {
            let _ = t.add(h);
        }
        live_at = live_at.max(live);
    }
    let secs = args.duration.as_secs_f64();
    let expected = total.sent as f64 * (args.peers - 1) as f64;
    let egress_pps = total.received as f64 / secs;
    let setup_s = live_at.saturating_duration_since(epoch).as_secs_f64();
    let q = |p: f64| {
        total
            .latency
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    Ok(RoomsSummary {
        rooms: args.rooms,
        peers_per_room: args.peers,
        subscriptions: args.rooms * args.peers * 2 * (args.peers - 1),
        setup_s,
        setup_peers_per_s: (args.rooms * args.peers) as f64 / setup_s.max(1e-9),
        egress_pps,
        server_cpu_cores: cores,
        egress_pps_per_core: cores.filter(|c| *c > 0.0).map(|c| egress_pps / c),
        p50_added_ms: q(0.5),
        p99_added_ms: q(0.99),
        loss: if expected > 0.0 {
            (1.0 - total.received as f64 / expected).max(0.0)
        } else {
            0.0
        },
        corrupted: total.corrupted,
        server_rss_mb: args.server_pid.and_then(procfs::peak_rss_mb),
    })
}
