//! `corecast-bench load`: WHIP publishers and WHEP viewers against a server,
//! with live lines, a final table and a JSON summary.

pub mod cap;
mod janus;
mod moq;
mod pacer;
pub mod rtmp;
pub mod schedule;
mod shard;
mod signal;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::accounting::Totals;
use crate::procfs;
use crate::url::{expand, HttpUrl};
pub use schedule::MediaPlan;
use shard::{ShardCmd, ShardReport, ShardSetup, Target};

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// WHIP URL template; `{stream}` is replaced by the stream name.
    #[arg(long, default_value = "http://127.0.0.1:8080/whip/{stream}")]
    pub whip: String,
    /// WHEP URL template.
    #[arg(long, default_value = "http://127.0.0.1:8080/whep/{stream}")]
    pub whep: String,
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Viewers, spread over the publishers (with --ramp: the most to try).
    #[arg(long, default_value_t = 20)]
    pub viewers: u32,
    /// Video bitrate per publisher (k and M suffixes).
    #[arg(long, default_value = "1.5M")]
    pub bitrate: String,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Add viewers in steps until a limit is crossed; report the highest step that held.
    #[arg(long)]
    pub ramp: bool,
    /// Viewers added per ramp step [default: viewers / 10, at least 10].
    #[arg(long)]
    pub step: Option<u32>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub step_duration: Duration,
    /// Loss above which a ramp step fails (0.001 = 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub max_loss: f64,
    /// p99 added latency above which a ramp step fails, in ms.
    #[arg(long, default_value_t = 10.0)]
    pub max_p99_ms: f64,
    /// A ramp step over a limit is measured again, with the same viewers,
    /// up to this many times before the ramp stops: one stall of a shared
    /// machine can push a short step's p99 over the limit, a real limit
    /// fails every time. Corruption is never retried.
    #[arg(long, default_value_t = 1)]
    pub step_retries: u32,
    /// Generator shards (threads).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Pin generator shard i to core first_core + i.
    #[arg(long)]
    pub first_core: Option<usize>,
    /// The server's PID, for CPU and memory figures.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the summary here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, env = "CORECAST_TOKEN")]
    pub token: Option<String>,
    /// Local address of the generator's sockets.
    #[arg(long, default_value = "127.0.0.1")]
    pub local_ip: IpAddr,
    /// Pace each publisher's video at this multiple of its bitrate, as
    /// browsers do (libwebrtc: 2.5); 0 sends each frame's packets back to
    /// back, the harder case for latency.
    #[arg(long, default_value_t = 0.0)]
    pub pacing: f64,
    /// Prefix of the stream names (stream i is PREFIX-i).
    #[arg(long, default_value = "bench")]
    pub stream_prefix: String,
    /// Publish over RTMP instead of WHIP, to this URL template
    /// (`rtmp://127.0.0.1:1935/live/{stream}`): H.264 probes and AAC audio
    /// that the server transcodes to Opus; viewers negotiate H.264.
    #[arg(long)]
    pub rtmp: Option<String>,
    /// Each WHIP publisher sends its video as three simulcast layers (RIDs
    /// q, h, f) at 0.1, 0.3 and 1 times --bitrate, each a VP8 stream with
    /// its own keyframes (periodic, and when the server asks for that
    /// layer); viewers count the layer switches they see.
    #[arg(long)]
    pub simulcast: bool,
    /// Cap each viewer's downlink at this rate (k and M suffixes): a token
    /// bucket (100 ms of the rate) and a 50 ms drop-tail queue between the
    /// viewer's socket and its WebRTC stack. Models a capped link at the
    /// receiver; the server does the same work.
    #[arg(long)]
    pub viewer_cap: Option<String>,
    /// Viewers are MoQ clients at this MoQ port (`moql://HOST:PORT/`)
    /// instead of WHEP viewers: each watches its publisher's stream as a
    /// room over raw QUIC (moq-lite), counting frames. Implies
    /// `--vp8-frames`. No ramp: `--viewers` at once.
    #[arg(long)]
    pub moq: Option<String>,
    /// The MoQ certificate's SHA-256 (hex) [default: fetched from the
    /// server's /certificate.sha256, next to --whep].
    #[arg(long)]
    pub moq_fingerprint: Option<String>,
    /// Video probes carry VP8 framing (frame starts, keyframes every 2 s,
    /// picture ids) in one layer, as MoQ viewers need: run WHEP rounds
    /// with it to compare with `--moq` on the same payloads.
    #[arg(long)]
    pub vp8_frames: bool,
    /// Put the load on a Janus gateway instead of corecast: its HTTP API
    /// root (`http://127.0.0.2:8088/janus`). Each stream is a VideoRoom
    /// room with one publisher; viewers subscribe to its feed (Janus makes
    /// their offers). Replaces --whip and --whep.
    #[arg(long)]
    pub janus: Option<String>,
    /// Time between the last viewer's set-up and the measured window
    /// (simulcast viewers take seconds to climb to the layer their link
    /// carries).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSummary {
    pub publishers: u32,
    pub viewers: u64,
    pub session_failures: u64,
    pub max_viewers: u64,
    /// Ramp steps that held only when measured again (see `--step-retries`).
    pub retried_steps: u32,
    pub egress_pps: f64,
    /// Packets all publishers sent per second (where egress was measured).
    pub ingress_pps: f64,
    pub egress_pps_per_core: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_s_per_million_packets: Option<f64>,
    pub server_rss_mb: Option<f64>,
    /// Added latency: publisher's send to the kernel's arrival stamp at the
    /// viewer's socket.
    pub p50_added_ms: f64,
    pub p99_added_ms: f64,
    /// Send to the generator's handling of the packet (adds the generator's
    /// own queueing behind other viewers on its cores).
    pub p50_delivered_ms: f64,
    pub p99_delivered_ms: f64,
    pub loss: f64,
    pub corrupted: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub jitter_ms_max: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub setup_per_s: f64,
    pub setup_per_s_per_core: Option<f64>,
    /// Publishers were RTMP encoders (`--rtmp`).
    pub rtmp: bool,
    /// RTMP publishers that failed to publish or stopped.
    pub rtmp_failures: u64,
    /// Server CPU spent transcoding AAC to Opus, milliseconds per second
    /// per publisher (from its `corecast_rtmp_transcode_microseconds_total`).
    pub transcode_ms_per_s_per_stream: Option<f64>,
    /// Publishers sent three simulcast layers (`--simulcast`).
    pub simulcast: bool,
    /// Each viewer's downlink cap, bits per second (`--viewer-cap`).
    pub viewer_cap_bps: Option<u64>,
    /// Layer switches the viewers saw in the measured window, up and down
    /// (from the payloads).
    pub layer_switches_up: u64,
    pub layer_switches_down: u64,
    /// Runs of the same layer again in the window (video paused, resumed).
    pub layer_resumes: u64,
    /// Layer runs over the whole run whose first packet was not a
    /// keyframe's first packet.
    pub unkeyed_layer_runs: u64,
    /// Simulcast video probes missing inside layer runs in the window: the
    /// check on `loss`, which counts gaps in the viewers' RTP sequence
    /// numbers (see `accounting.rs`).
    pub layer_run_lost: u64,
    /// Of those, probes in gaps that ended at a keyframe's first packet of
    /// the same run: a layer the server stopped (video paused, or a layer
    /// far over the estimate) and resumed at a keyframe without starting a
    /// new run of sequence numbers; or loss just before a keyframe.
    pub lost_before_keyframes: u64,
    /// Viewers whose newest video packet at the end was of layer i
    /// (simulcast only; from the payloads).
    pub viewers_per_layer: Vec<u64>,
    /// Keyframes publishers sent in the window because the server asked.
    pub requested_keyframes: u64,
    /// Datagrams the viewers' capped links dropped in the window.
    pub cap_dropped: u64,
    /// What arrived at a viewer's socket in the window, bits per second
    /// (UDP payload, before a cap; media, retransmissions, padding, RTCP),
    /// the mean over the viewers up.
    pub viewer_rx_bps: f64,
    /// From the server's /metrics, over the window:
    /// `corecast_layer_switches_up_total` and `_down_total`,
    /// `corecast_video_pauses_total`.
    pub server_layer_switches_up: Option<f64>,
    pub server_layer_switches_down: Option<f64>,
    pub server_video_pauses: Option<f64>,
    /// At the end: `corecast_video_slots_layer0..3`.
    pub server_video_slots_per_layer: Option<Vec<f64>>,
    /// At the end: the mean of the viewer legs' bandwidth estimates,
    /// `corecast_estimate_bps_sum / corecast_estimated_legs`.
    pub server_mean_estimate_bps: Option<f64>,
    /// UDP payload bits per second all viewers received, per server core
    /// (`viewer_rx_bps` x viewers up / `server_cpu_cores`): comparable
    /// between WebRTC and MoQ viewers of the same publishers.
    pub egress_bps_per_core: Option<f64>,
    /// With `--server-pid`: the server's resident memory (VmRSS, MiB) at
    /// each point `[viewers up, MiB]`: before the first viewer, then after
    /// each ramp step that held (or once all `--viewers` are up).
    pub rss_samples: Vec<(u64, f64)>,
    /// The least-squares slope of those samples, KiB per viewer.
    pub rss_per_viewer_kib: Option<f64>,
    /// Viewers were MoQ clients (`--moq`).
    pub moq: bool,
    /// Video and audio frames per second a MoQ viewer received (the mean
    /// over the viewers up, in the window).
    pub moq_video_fps: Option<f64>,
    pub moq_audio_fps: Option<f64>,
}

/// Counters of the server's /metrics the summary reports (summed over shards).
const SERVER_METRICS: [&str; 9] = [
    "corecast_layer_switches_up_total",
    "corecast_layer_switches_down_total",
    "corecast_video_pauses_total",
    "corecast_video_slots_layer0",
    "corecast_video_slots_layer1",
    "corecast_video_slots_layer2",
    "corecast_video_slots_layer3",
    "corecast_estimated_legs",
    "corecast_estimate_bps_sum",
];

/// Scrapes `metrics_url` for [`SERVER_METRICS`] (`None` where absent).
fn server_metrics(metrics_url: &HttpUrl) -> Option<Vec<Option<f64>>> {
    let r = crate::url::request(metrics_url, "GET", None, None, b"").ok()?;
    (r.status == 200).then(|| {
        SERVER_METRICS
            .iter()
            .map(|m| rtmp::metric_sum(&r.body, m))
            .collect()
    })
}

/// Fills the summary's server-side layer figures from two scrapes.
fn server_layer_figures(
    before: Option<&[Option<f64>]>,
    after: Option<&[Option<f64>]>,
    summary: &mut LoadSummary,
) {
    let Some(after) = after else {
        return;
    };
    let delta = |i: usize| match (before.and_then(|b| b[i]), after[i]) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    summary.server_layer_switches_up = delta(0);
    summary.server_layer_switches_down = delta(1);
    summary.server_video_pauses = delta(2);
    let slots: Vec<f64> = after[3..7].iter().map(|v| v.unwrap_or(0.0)).collect();
    if after[3..7].iter().any(Option::is_some) {
        summary.server_video_slots_per_layer = Some(slots);
    }
    if let (Some(legs), Some(sum)) = (after[7], after[8]) {
        if legs > 0.0 {
            summary.server_mean_estimate_bps = Some(sum / legs);
        }
    }
}

/// A measurement window: cumulative counters at its start.
struct Window {
    at: Instant,
    totals: Totals,
    cpu: Option<f64>,
}

struct Run {
    args: LoadArgs,
    commands: Vec<flume::Sender<ShardCmd>>,
    reports: flume::Receiver<ShardReport>,
    latest: Vec<Totals>,
    /// Latency and join samples since the last `take_interval`.
    interval: Totals,
    viewers: u64,
    last_line: Instant,
    /// Packets RTMP publishers sent (they run outside the shards).
    rtmp_sent: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Run {
    /// Cumulative counters over all shards.
    fn cumulative(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.latest {
            t.merge_counts(s);
        }
        if let Some(sent) = &self.rtmp_sent {
            t.sent += sent.load(std::sync::atomic::Ordering::Relaxed);
        }
        t
    }

    /// Waits up to `d` for reports, folding them in; prints a live line a second.
    fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.reports.recv_timeout(left) {
                Ok(r) => {
                    let _ = self.interval.latency_us.add(&r.totals.latency_us);
                    let _ = self.interval.delivered_us.add(&r.totals.delivered_us);
                    let _ = self.interval.join_us.add(&r.totals.join_us);
                    if let Some(slot) = self.latest.get_mut(r.shard) {
                        *slot = r.totals;
                    }
                    if self.last_line.elapsed() >= Duration::from_secs(1) {
                        self.last_line = Instant::now();
                        self.live_line();
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => return,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn live_line(&self) {
        let c = self.cumulative();
        let layers = if self.args.simulcast {
            let on = c.on_layer;
            format!(
                " | layers {}/{}/{} switches {} up {} down",
                on[0], on[1], on[2], c.switches_up, c.switches_down
            )
        } else {
            String::new()
        };
        eprintln!(
            "sessions {}/{} (failed {}) | sent {} rx {} | loss {:.3}% corrupted {} | p50 {:.2} ms p99 {:.2} ms{layers}",
            c.sessions_up,
            self.viewers,
            c.session_failures,
            c.sent,
            c.received,
            c.loss() * 100.0,
            c.corrupted,
            self.interval.latency_ms(0.5),
            self.interval.latency_ms(0.99),
        );
    }

    fn window(&self) -> Window {
        Window {
            at: Instant::now(),
            totals: self.cumulative(),
            cpu: self.args.server_pid.and_then(procfs::cpu_seconds),
        }
    }

    fn add_viewers(&mut self, n: u32) {
        let shards = self.commands.len();
        for _ in 0..n {
            let j = self.viewers as u32;
            let publisher = j % self.args.publishers.max(1);
            let stream = format!("{}-{publisher}", self.args.stream_prefix);
            let Ok(to) = target(&self.args, &self.args.whep, stream) else {
                continue;
            };
            let _ = self.commands[j as usize % shards].send(ShardCmd::AddViewer { publisher, to });
            self.viewers += 1;
        }
    }

    /// Waits until every viewer is up or failed, at most `limit`.
    fn wait_sessions(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.pump(Duration::from_millis(50));
            let c = self.cumulative();
            if c.sessions_up + c.session_failures >= self.viewers {
                break;
            }
        }
        start.elapsed()
    }
}

/// Measured between two windows.
struct Measured {
    egress_pps: f64,
    /// Packets the publishers sent per second.
    ingress_pps: f64,
    loss: f64,
    cpu_cores: Option<f64>,
    latency: Totals,
    /// Counts over the window (switches, keyframes asked for, cap drops;
    /// `on_layer` as at its end).
    layers: Totals,
    /// The window's length, seconds.
    secs: f64,
}

fn measure(run: &mut Run, d: Duration) -> Measured {
    let start = run.window();
    run.interval = Totals::default();
    run.pump(d);
    let end = run.window();
    let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    // Probes, and the packets of RTMP streams that carry none.
    let received = (end.totals.received + end.totals.unchecked)
        .saturating_sub(start.totals.received + start.totals.unchecked);
    let expected = end.totals.expected.saturating_sub(start.totals.expected);
    let lost = end.totals.lost.saturating_sub(start.totals.lost);
    let sent = end.totals.sent.saturating_sub(start.totals.sent);
    let (a, b) = (&start.totals, &end.totals);
    let layers = Totals {
        switches_up: b.switches_up.saturating_sub(a.switches_up),
        switches_down: b.switches_down.saturating_sub(a.switches_down),
        resumed: b.resumed.saturating_sub(a.resumed),
        unkeyed_runs: b.unkeyed_runs,
        run_lost: b.run_lost.saturating_sub(a.run_lost),
        gaps_before_keyframes: b
            .gaps_before_keyframes
            .saturating_sub(a.gaps_before_keyframes),
        on_layer: b.on_layer,
        requested_keyframes: b.requested_keyframes.saturating_sub(a.requested_keyframes),
        cap_dropped: b.cap_dropped.saturating_sub(a.cap_dropped),
        viewer_rx_bytes: b.viewer_rx_bytes.saturating_sub(a.viewer_rx_bytes),
        ..Totals::default()
    };
    Measured {
        egress_pps: received as f64 / secs,
        ingress_pps: sent as f64 / secs,
        loss: if expected == 0 {
            0.0
        } else {
            lost as f64 / expected as f64
        },
        cpu_cores: match (start.cpu, end.cpu) {
            (Some(a), Some(b)) => Some((b - a) / secs),
            _ => None,
        },
        latency: std::mem::take(&mut run.interval),
        layers,
        secs,
    }
}

/// Parses `1.5M`, `800k`, `2000000`.
pub fn parse_bitrate(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1e3),
        'm' | 'M' => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v > 0.0).then_some((v * mult) as u64)
}

/// Where a peer of `stream` sets up: Janus's room when `--janus` is given,
/// else the WHIP or WHEP URL template `template`.
fn target(args: &LoadArgs, template: &str, stream: String) -> Result<Target, String> {
    match &args.janus {
        Some(api) => Ok(Target::Janus {
            api: HttpUrl::parse(api).map_err(|e| e.to_string())?,
            stream,
        }),
        None => Ok(Target::Whip(
            HttpUrl::parse(&expand(template, &stream)).map_err(|e| e.to_string())?,
        )),
    }
}

pub fn run(args: LoadArgs) -> Result<LoadSummary, String> {
    let bitrate =
        parse_bitrate(&args.bitrate).ok_or_else(|| format!("bad --bitrate {}", args.bitrate))?;
    HttpUrl::parse(&expand(&args.whip, "x")).map_err(|e| e.to_string())?;
    HttpUrl::parse(&expand(&args.whep, "x")).map_err(|e| e.to_string())?;
    let viewer_cap = match &args.viewer_cap {
        Some(c) => Some(parse_bitrate(c).ok_or_else(|| format!("bad --viewer-cap {c}"))?),
        None => None,
    };
    if let Some(api) = &args.janus {
        HttpUrl::parse(api).map_err(|e| format!("bad --janus {api}: {e}"))?;
        if args.simulcast || args.rtmp.is_some() || args.moq.is_some() {
            return Err(
                "--janus takes plain WHIP-like publishers (no --simulcast, --rtmp, --moq)".into(),
            );
        }
    }
    if args.simulcast && args.rtmp.is_some() {
        return Err("--simulcast needs WHIP publishers, not --rtmp".to_string());
    }
    let mut plan = MediaPlan::standard(bitrate, args.pacing);
    plan.simulcast = args.simulcast;
    plan.vp8_frames = args.vp8_frames || args.moq.is_some();
    if args.moq.is_some() && (args.ramp || args.simulcast || args.rtmp.is_some()) {
        return Err(
            "--moq takes WHIP publishers and a fixed --viewers (no --ramp, --simulcast, --rtmp)"
                .into(),
        );
    }
    if let Some(t) = &args.rtmp {
        rtmp::parse_url(&expand(t, "x")).ok_or_else(|| format!("bad --rtmp {t}"))?;
        // One NAL unit per packet, each small enough for the server to
        // send it whole (corecast_rtmp::endpoint::MAX_PAYLOAD).
        plan.max_payload = 1100;
    }
    let epoch = Instant::now();
    let signal = signal::start(4);
    let (report_tx, report_rx) = flume::unbounded();
    let shards = args.shards.max(1);
    let mut commands = Vec::new();
    let mut handles = Vec::new();
    for id in 0..shards {
        let (tx, rx) = flume::unbounded();
        commands.push(tx);
        let setup = ShardSetup {
            id,
            core: args.first_core.map(|c| c + id),
            local_ip: args.local_ip,
            token: args.token.clone(),
            plan,
            epoch,
            commands: rx,
            reports: report_tx.clone(),
            signal: signal.clone(),
            rtmp: args.rtmp.is_some(),
            viewer_cap,
        };
        handles.push(shard::spawn(setup).map_err(|e| e.to_string())?);
    }
    drop(report_tx);
    let mut run = Run {
        latest: vec![Totals::default(); shards],
        args: args.clone(),
        commands,
        reports: report_rx,
        interval: Totals::default(),
        viewers: 0,
        last_line: Instant::now(),
        rtmp_sent: None,
    };

    let mut encoders = None;
    if let Some(template) = &args.rtmp {
        let urls = (0..args.publishers)
            .map(|i| (i, expand(template, &format!("{}-{i}", args.stream_prefix))))
            .collect();
        let p = rtmp::start(urls, plan, epoch);
        run.rtmp_sent = Some(p.sent.clone());
        encoders = Some(p);
    } else {
        for i in 0..args.publishers {
            let stream = format!("{}-{i}", args.stream_prefix);
            let to = target(&args, &args.whip, stream)?;
            let _ = run.commands[i as usize % shards].send(ShardCmd::AddPublisher { index: i, to });
        }
    }
    run.pump(Duration::from_secs(2));
    let metrics_url = HttpUrl::parse(&expand(&args.whep, "x"))
        .map(|u| u.join("/metrics"))
        .map_err(|e| e.to_string())?;
    let transcode_us = || -> Option<f64> {
        let r = crate::url::request(&metrics_url, "GET", None, None, b"").ok()?;
        rtmp::metric_sum(&r.body, "corecast_rtmp_transcode_microseconds_total")
    };

    let mut summary = LoadSummary {
        publishers: args.publishers,
        simulcast: args.simulcast,
        viewer_cap_bps: viewer_cap,
        ..LoadSummary::default()
    };
    sample_rss(&run, &mut summary, 0);
    if let Some(moq_url) = &args.moq {
        let summary = moq_round(&mut run, moq_url, summary)?;
        stop(run, handles, &signal);
        return Ok(summary);
    }
    let setup_start = run.window();
    let metrics_before;
    let measured = if args.ramp {
        metrics_before = server_metrics(&metrics_url);
        ramp(&mut run, &mut summary)
    } else {
        run.add_viewers(args.viewers);
        let took = run.wait_sessions(Duration::from_secs(30));
        setup_rate(&run, &setup_start, took, &mut summary);
        run.pump(args.warmup);
        summary.max_viewers = run.cumulative().sessions_up;
        let up = summary.max_viewers;
        sample_rss(&run, &mut summary, up);
        let (before, at) = (transcode_us(), Instant::now());
        metrics_before = server_metrics(&metrics_url);
        let m = measure(&mut run, args.duration);
        if let (Some(a), Some(b), true) = (before, transcode_us(), args.rtmp.is_some()) {
            let secs = at.elapsed().as_secs_f64().max(1e-9);
            let per_stream = (b - a) / 1000.0 / secs / f64::from(args.publishers.max(1));
            summary.transcode_ms_per_s_per_stream = Some(per_stream);
        }
        m
    };

    let metrics_after = server_metrics(&metrics_url);
    server_layer_figures(
        metrics_before.as_deref(),
        metrics_after.as_deref(),
        &mut summary,
    );
    let c = run.cumulative();
    let l = &measured.layers;
    summary.layer_switches_up = l.switches_up;
    summary.layer_switches_down = l.switches_down;
    summary.layer_resumes = l.resumed;
    summary.unkeyed_layer_runs = l.unkeyed_runs;
    summary.layer_run_lost = l.run_lost;
    summary.lost_before_keyframes = l.gaps_before_keyframes;
    if args.simulcast {
        summary.viewers_per_layer = l.on_layer[..plan.layers()].to_vec();
    }
    summary.requested_keyframes = l.requested_keyframes;
    summary.cap_dropped = l.cap_dropped;
    if c.sessions_up > 0 {
        let bits = l.viewer_rx_bytes as f64 * 8.0 / measured.secs;
        summary.viewer_rx_bps = bits / c.sessions_up as f64;
    }
    summary.viewers = run.viewers;
    summary.session_failures = c.session_failures;
    summary.egress_pps = measured.egress_pps;
    summary.ingress_pps = measured.ingress_pps;
    summary.server_cpu_cores = measured.cpu_cores;
    summary.egress_pps_per_core = measured
        .cpu_cores
        .filter(|c| *c > 0.0)
        .map(|c| measured.egress_pps / c);
    summary.server_cpu_s_per_million_packets = summary.egress_pps_per_core.map(|pps| 1e6 / pps);
    summary.egress_bps_per_core = measured
        .cpu_cores
        .filter(|cores| *cores > 0.0)
        .map(|cores| summary.viewer_rx_bps * c.sessions_up as f64 / cores);
    summary.p50_added_ms = measured.latency.latency_ms(0.5);
    summary.p99_added_ms = measured.latency.latency_ms(0.99);
    summary.p50_delivered_ms = measured.latency.delivered_ms(0.5);
    summary.p99_delivered_ms = measured.latency.delivered_ms(0.99);
    summary.loss = measured.loss;
    summary.corrupted = c.corrupted;
    summary.reordered = c.reordered;
    summary.duplicates = c.duplicates;
    summary.jitter_ms_max = c.jitter_ms_max;
    summary.server_rss_mb = args.server_pid.and_then(procfs::peak_rss_mb);

    summary.rtmp = args.rtmp.is_some();
    if let Some(p) = encoders {
        summary.rtmp_failures = p.failures.load(std::sync::atomic::Ordering::Relaxed);
        p.stop();
    }
    stop(run, handles, &signal);
    Ok(summary)
}

/// Adds the server's resident memory with `viewers` up to the summary's
/// samples, and refits the slope.
fn sample_rss(run: &Run, summary: &mut LoadSummary, viewers: u64) {
    if let Some(mb) = run.args.server_pid.and_then(procfs::rss_mb) {
        summary.rss_samples.push((viewers, mb));
        summary.rss_per_viewer_kib = slope(&summary.rss_samples).map(|mb| mb * 1024.0);
    }
}

/// The least-squares slope of `y` over `x`; `None` without two distinct `x`.
fn slope(points: &[(u64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 as f64 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 as f64 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Stops the generator's shards and lets the signalling threads send the
/// DELETEs.
fn stop(
    mut run: Run,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    signal: &flume::Sender<signal::SignalRequest>,
) {
    for tx in &run.commands {
        let _ = tx.send(ShardCmd::Stop);
    }
    run.pump(Duration::from_millis(500));
    for h in handles {
        let _ = h.join();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !signal.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// `--moq`: the publishers are up; `--viewers` MoQ clients watch them
/// (viewer i the stream of publisher i mod publishers), then one window of
/// `--duration` is measured.
fn moq_round(
    run: &mut Run,
    moq_url: &str,
    mut summary: LoadSummary,
) -> Result<LoadSummary, String> {
    let args = run.args.clone();
    let server = moq_url
        .strip_prefix("moql://")
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .ok_or_else(|| format!("bad --moq {moq_url} (moql://IP:PORT/)"))?;
    let fingerprint = match &args.moq_fingerprint {
        Some(f) => f.clone(),
        None => {
            let url = HttpUrl::parse(&expand(&args.whep, "x"))
                .map(|u| u.join("/certificate.sha256"))
                .map_err(|e| e.to_string())?;
            let r = crate::url::request(&url, "GET", None, None, b"").map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!(
                    "/certificate.sha256: HTTP {} (is --moq-port set?)",
                    r.status
                ));
            }
            r.body.trim().to_string()
        }
    };
    let rooms = (0..args.viewers)
        .map(|i| format!("{}-{}", args.stream_prefix, i % args.publishers.max(1)))
        .collect();
    let viewers = moq::start(rooms, server, fingerprint, args.local_ip, args.first_core)?;
    let t0 = Instant::now();
    while viewers.totals().up < u64::from(args.viewers) && t0.elapsed() < Duration::from_secs(30) {
        run.pump(Duration::from_millis(100));
    }
    run.pump(args.warmup);
    sample_rss(run, &mut summary, viewers.totals().up);
    let (a, cpu_a, at) = (
        viewers.totals(),
        args.server_pid.and_then(procfs::cpu_seconds),
        Instant::now(),
    );
    run.pump(args.duration);
    let (b, cpu_b) = (
        viewers.totals(),
        args.server_pid.and_then(procfs::cpu_seconds),
    );
    let secs = at.elapsed().as_secs_f64().max(1e-9);
    viewers.stop();
    summary.moq = true;
    summary.viewers = u64::from(args.viewers);
    summary.max_viewers = b.up;
    summary.session_failures = b.failed + u64::from(args.viewers).saturating_sub(b.up);
    let per_viewer = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / secs / b.up.max(1) as f64;
    summary.viewer_rx_bps = per_viewer(a.rx_bytes, b.rx_bytes) * 8.0;
    summary.moq_video_fps = Some(per_viewer(a.video_frames, b.video_frames));
    summary.moq_audio_fps = Some(per_viewer(a.audio_frames, b.audio_frames));
    if let (Some(x), Some(y)) = (cpu_a, cpu_b) {
        let cores = (y - x) / secs;
        summary.server_cpu_cores = Some(cores);
        if cores > 0.0 {
            summary.egress_bps_per_core = Some(summary.viewer_rx_bps * b.up as f64 / cores);
        }
    }
    summary.server_rss_mb = args.server_pid.and_then(procfs::peak_rss_mb);
    Ok(summary)
}

fn setup_rate(run: &Run, start: &Window, took: Duration, summary: &mut LoadSummary) {
    let up = run
        .cumulative()
        .sessions_up
        .saturating_sub(start.totals.sessions_up);
    summary.setup_per_s = up as f64 / took.as_secs_f64().max(1e-9);
    let cpu = run.args.server_pid.and_then(procfs::cpu_seconds);
    if let (Some(a), Some(b)) = (start.cpu, cpu) {
        if b > a {
            summary.setup_per_s_per_core = Some(up as f64 / (b - a));
        }
    }
    summary.join_p50_ms = run.interval.join_ms(0.5);
    summary.join_p99_ms = run.interval.join_ms(0.99);
}

/// How one ramp measurement compares with the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Held,
    /// Loss or p99 over the limit: may be measured again.
    Over,
    /// A corrupted payload: the step fails for good.
    Corrupted,
}

fn verdict(loss: f64, p99_ms: f64, corrupted: u64, max_loss: f64, max_p99_ms: f64) -> Verdict {
    if corrupted > 0 {
        Verdict::Corrupted
    } else if loss <= max_loss && p99_ms <= max_p99_ms {
        Verdict::Held
    } else {
        Verdict::Over
    }
}

/// Adds viewers step by step; returns the measurement at half of the highest
/// step that held (the operating point the targets talk about).
fn ramp(run: &mut Run, summary: &mut LoadSummary) -> Measured {
    let step = run.args.step.unwrap_or((run.args.viewers / 10).max(10));
    let mut held: Vec<(u64, Measured)> = Vec::new();
    let mut first = true;
    while run.viewers < u64::from(run.args.viewers) {
        let add = step.min(run.args.viewers - run.viewers as u32);
        let start = run.window();
        run.add_viewers(add);
        let took = run.wait_sessions(Duration::from_secs(30));
        if first {
            setup_rate(run, &start, took, summary);
            first = false;
        }
        run.pump(Duration::from_secs(1));
        let mut tries = 0;
        let (m, ok, up) = loop {
            let m = measure(run, run.args.step_duration);
            let c = run.cumulative();
            let p99 = m.latency.latency_ms(0.99);
            let a = &run.args;
            let verdict = verdict(m.loss, p99, c.corrupted, a.max_loss, a.max_p99_ms);
            eprintln!(
                "step {} viewers: loss {:.3}% p99 {:.2} ms egress {:.0} pps -> {}",
                c.sessions_up,
                m.loss * 100.0,
                p99,
                m.egress_pps,
                match verdict {
                    Verdict::Held => "held",
                    Verdict::Over if tries < run.args.step_retries =>
                        "over the limit, measuring again",
                    Verdict::Over | Verdict::Corrupted => "over the limit",
                }
            );
            match verdict {
                Verdict::Over if tries < run.args.step_retries => tries += 1,
                v => break (m, v == Verdict::Held, c.sessions_up),
            }
        };
        if !ok {
            break;
        }
        if tries > 0 {
            summary.retried_steps += 1;
        }
        sample_rss(run, summary, up);
        held.push((up, m));
    }
    summary.max_viewers = held.last().map_or(0, |h| h.0);
    let half = summary.max_viewers / 2;
    let pick = held.iter().position(|(v, _)| *v >= half).unwrap_or(0);
    if held.is_empty() {
        return measure(run, Duration::from_secs(1));
    }
    // The egress rate and CPU are best measured at the highest step; the
    // latency figures at half of it.
    let (_, top) = held.pop().expect("checked non-empty");
    let latency = if pick < held.len() {
        held.swap_remove(pick).1.latency
    } else {
        top.latency.clone()
    };
    Measured { latency, ..top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_slope_is_least_squares() {
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(0, 30.0), (0, 31.0)]), None);
        assert_eq!(slope(&[(0, 30.0), (100, 80.0)]), Some(0.5));
        let s = slope(&[(0, 30.0), (100, 81.0), (200, 129.0)]).unwrap();
        assert!((s - 0.495).abs() < 1e-9, "{s}");
    }

    #[test]
    fn step_verdicts() {
        assert_eq!(verdict(0.0, 4.0, 0, 0.001, 10.0), Verdict::Held);
        // The limits themselves still hold.
        assert_eq!(verdict(0.001, 10.0, 0, 0.001, 10.0), Verdict::Held);
        assert_eq!(verdict(0.002, 4.0, 0, 0.001, 10.0), Verdict::Over);
        assert_eq!(verdict(0.0, 10.5, 0, 0.001, 10.0), Verdict::Over);
        // Corruption fails the step whatever the latency and loss.
        assert_eq!(verdict(0.0, 1.0, 1, 0.001, 10.0), Verdict::Corrupted);
    }

    #[test]
    fn server_layer_figures_are_window_deltas_and_end_values() {
        let before = vec![
            Some(2.0),
            Some(1.0),
            Some(0.0),
            Some(9.0),
            None,
            None,
            None,
            Some(9.0),
            Some(9e6),
        ];
        let after = vec![
            Some(7.0),
            Some(4.0),
            Some(1.0),
            Some(3.0),
            Some(2.0),
            Some(5.0),
            None,
            Some(10.0),
            Some(5e6),
        ];
        let mut s = LoadSummary::default();
        server_layer_figures(Some(&before), Some(&after), &mut s);
        assert_eq!(s.server_layer_switches_up, Some(5.0));
        assert_eq!(s.server_layer_switches_down, Some(3.0));
        assert_eq!(s.server_video_pauses, Some(1.0));
        assert_eq!(
            s.server_video_slots_per_layer,
            Some(vec![3.0, 2.0, 5.0, 0.0])
        );
        assert_eq!(s.server_mean_estimate_bps, Some(500_000.0));
        // A server without these metrics leaves them out.
        let mut s = LoadSummary::default();
        server_layer_figures(None, Some(&[None; 9]), &mut s);
        assert_eq!(s.server_video_slots_per_layer, None);
        assert_eq!(s.server_layer_switches_up, None);
    }

    #[test]
    fn bitrates_parse() {
        assert_eq!(parse_bitrate("1.5M"), Some(1_500_000));
        assert_eq!(parse_bitrate("800k"), Some(800_000));
        assert_eq!(parse_bitrate("2000"), Some(2000));
        assert_eq!(parse_bitrate("x"), None);
        assert_eq!(parse_bitrate("-1M"), None);
    }
}
