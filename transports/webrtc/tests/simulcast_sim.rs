//! Simulcast through the SFU in simulated time: a publisher sends three
//! layers, an adaptive viewer's downlink drops from 2 Mbit/s to 300 kbit/s
//! and comes back. Full ICE, DTLS, SRTP and transport-wide congestion
//! control run on every leg; the viewer's leg estimates its bandwidth with
//! str0m's estimator, fed by the viewer client's real feedback through a
//! drop-tail bottleneck.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use corecast_media::MediaKind;
use corecast_webrtc::{
    read_simulcast_frame, simulcast_frame, Client, ClientEvent, Endpoint, PublisherInfo,
    ViewerOptions,
};

/// Layer bitrates (payload), lowest first.
const RATES: [u64; 3] = [100_000, 350_000, 1_200_000];
const FPS: u64 = 30;
/// How long after the link drops its viewer is off the top layer (the
/// issue asks for 2 s): str0m's estimate falls within about 0.5 s; a layer
/// far over the estimate stops at once, and the lower layer starts at its
/// keyframe. Measured here: 0.9 s to the middle layer, 1.8 s to the low one
/// (arrival at the viewer, behind the bottleneck's full queue).
const DROP_REACTION: Duration = Duration::from_secs(2);
/// How long after the link comes back its viewer is on the top layer again:
/// the estimate grows from about 300 kbit/s with padding toward the next
/// layer and a probe every 2 s. Measured here: 5.0 s (the issue asks for 5).
const RECOVERY: Duration = Duration::from_millis(5500);
/// The widest run of sequence numbers the viewer may miss: packets the
/// bottleneck dropped and retransmission did not bring back.
const MAX_HOLE: u64 = 20;
/// A keyframe of every layer this often, besides those asked for.
const GOP_FRAMES: u64 = 90;

/// One frame of one layer, as the publisher sends it.
fn frame_packets(layer: u8, frame: u64, key: bool) -> Vec<Vec<u8>> {
    simulcast_frame(
        layer,
        frame,
        key,
        (RATES[usize::from(layer)] / 8 / FPS) as usize,
    )
}

/// What the viewer got: per received frame, (arrival, layer, frame, key,
/// picture id), in arrival order.
struct Frame {
    at: Instant,
    layer: u8,
    frame: u32,
    key: bool,
    picture_id: u16,
    packets: usize,
    first_seq: u64,
    last_seq: u64,
}

/// The viewer's packets in sequence order (as its jitter buffer plays
/// them), each once, grouped into frames.
fn frames_received(w: &World, v: usize) -> Vec<Frame> {
    let mut packets: BTreeMap<u64, (Instant, &[u8])> = BTreeMap::new();
    for e in &w.clients[v].events {
        if let ClientEvent::Media {
            kind: MediaKind::Video,
            seq,
            payload,
            arrival,
            ..
        } = e
        {
            packets.entry(*seq).or_insert((*arrival, payload));
        }
    }
    let mut frames: Vec<Frame> = Vec::new();
    for (seq, (arrival, payload)) in &packets {
        let (layer, frame, _, key, picture_id) =
            read_simulcast_frame(payload).expect("a frame of the publisher");
        match frames.last_mut() {
            Some(f) if f.layer == layer && f.frame == frame => {
                f.packets += 1;
                f.last_seq = *seq;
            }
            _ => frames.push(Frame {
                at: *arrival,
                layer,
                frame,
                key,
                picture_id,
                packets: 1,
                first_seq: *seq,
                last_seq: *seq,
            }),
        }
    }
    frames
}

#[test]
fn a_viewer_whose_link_drops_steps_down_and_back_up_at_keyframes_only() {
    let mut w = World::new();
    let local = addr("10.0.0.1:1000");
    let (client, offer) =
        Client::simulcast_publisher(&w.config, w.now, local, &["q", "h", "f"]).unwrap();
    let who = PublisherInfo {
        room: "room".into(),
        peer: "alice".into(),
    };
    let (endpoint, answer) = Endpoint::publisher(&w.config, w.now, &offer, who).unwrap();
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    let p = w.connect(local, client, endpoint, &answer);
    let vlocal = addr("10.0.0.2:1000");
    let (client, offer) = Client::viewer(&w.config, w.now, vlocal).unwrap();
    let options = ViewerOptions {
        adaptive: true,
        max_spatial: None,
    };
    let (endpoint, answer) = Endpoint::viewer_with(&w.config, w.now, &offer, &[], options).unwrap();
    assert!(answer.contains("transport-wide-cc"), "{answer}");
    let v = w.connect(vlocal, client, endpoint, &answer);
    subscribe_all(&mut w, p, &[v]);
    w.links.push((vlocal, Link::new(2_000_000, w.now)));
    w.run_until(Duration::from_secs(5), World::all_connected);

    let t0 = w.now;
    let mut frame = 0u64;
    let mut audio_seq = 0u64;
    let mut seq = [10_000u64, 20_000, 30_000];
    let mut wants_key = [true; 3];
    let mut keys_sent = [0usize; 3];
    let limit = |t: Duration| {
        if t >= Duration::from_secs(15) && t < Duration::from_secs(25) {
            300_000
        } else {
            2_000_000
        }
    };
    let mut limited = false;
    let mut estimates = Vec::new();
    while w.now < t0 + Duration::from_secs(35) {
        if (w.now - t0).as_millis().is_multiple_of(250) {
            let e = w.legs[v].endpoint.stats().layers.estimate_bps;
            estimates.push((
                (w.now - t0).as_millis(),
                e / 1000,
                w.links[0].1.dropped,
                w.links[0].1.bytes / 1000,
            ));
        }
        let t = w.now - t0;
        let rate = limit(t);
        if (rate == 300_000) != limited {
            limited = rate == 300_000;
            w.links[0].1.rate_bps = rate;
        }
        // Opus-sized audio every 20 ms: the viewer's leg always has media.
        let audio_due = t0 + Duration::from_millis(20 * audio_seq);
        if w.now >= audio_due {
            let now = w.now;
            let body = [0xfcu8; 100];
            let ts = (audio_seq * 960) as u32;
            assert!(w.client(p).client.send(
                now,
                MediaKind::Audio,
                audio_seq + 1,
                ts,
                false,
                &body
            ));
            audio_seq += 1;
            w.drain();
        }
        let due = t0 + Duration::from_micros(frame * 1_000_000 / FPS);
        if w.now >= due {
            for layer in 0..3u8 {
                let l = usize::from(layer);
                let key = wants_key[l] || frame.is_multiple_of(GOP_FRAMES);
                wants_key[l] = false;
                keys_sent[l] += usize::from(key);
                let ts = (frame * 90_000 / FPS) as u32 + 77 * u32::from(layer);
                let packets = frame_packets(layer, frame, key);
                let n = packets.len();
                for (i, body) in packets.iter().enumerate() {
                    let now = w.now;
                    assert!(w
                        .client(p)
                        .client
                        .send_layer(now, l, seq[l], ts, i + 1 == n, body));
                    seq[l] += 1;
                    w.drain();
                }
            }
            frame += 1;
            // Keyframe requests the server sent, per layer.
            for e in w.clients[p].events.drain(..) {
                if let ClientEvent::LayerKeyframeRequest(l) = e {
                    wants_key[l] = true;
                }
            }
        }
        w.run(Duration::from_millis(1));
    }

    let frames = frames_received(&w, v);
    assert!(frames.len() > 500, "{} frames", frames.len());
    let history: Vec<(u128, u8)> = {
        let mut h = Vec::new();
        for f in &frames {
            if h.last().is_none_or(|(_, l)| *l != f.layer) {
                h.push(((f.at - t0).as_millis(), f.layer));
            }
        }
        h
    };
    println!("layer history (ms, layer): {history:?}");
    println!(
        "keyframes sent per layer {keys_sent:?}, link drops {}",
        w.links[0].1.dropped
    );
    println!("viewer stats {:?}", w.legs[v].endpoint.stats().layers);
    println!("estimates (ms, kbit/s): {estimates:?}");

    // Every run of a layer starts with that layer's keyframe: no delta
    // frame of a layer before its keyframe.
    let mut layer = None;
    for f in &frames {
        if layer != Some(f.layer) {
            assert!(f.key, "layer {} started without a keyframe", f.layer);
            layer = Some(f.layer);
        }
    }
    // Picture ids continue across switches and resumes (+1), and within a
    // run follow the publisher's frames. A picture lost whole at the
    // bottleneck (a hole in the sequence numbers between two frames) is a
    // gap the viewer sees as loss.
    for pair in frames.windows(2) {
        let step = pair[1].picture_id.wrapping_sub(pair[0].picture_id) & 0x7fff;
        let frames_apart = pair[1].frame.wrapping_sub(pair[0].frame) as u16;
        let same_run = pair[1].layer == pair[0].layer && step == frames_apart;
        let lost_between = pair[1].first_seq > pair[0].last_seq + 1;
        assert!(
            same_run || step == 1 || lost_between && step > 1,
            "picture ids continue: {step}"
        );
    }
    // The viewer's sequence numbers have no hole wider than a loss burst
    // of the bottleneck: a layer resumed after a pause continues them.
    let seqs: std::collections::BTreeSet<u64> = w.clients[v]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind: MediaKind::Video,
                seq,
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect();
    let widest = seqs
        .iter()
        .zip(seqs.iter().skip(1))
        .map(|(a, b)| b - a - 1)
        .max()
        .unwrap_or(0);
    println!("widest hole in the viewer's sequence numbers: {widest}");
    assert!(widest <= MAX_HOLE, "a hole of {widest} sequence numbers");
    // Whole frames: every packet of a forwarded frame arrived, except
    // while the link's queue overflows in the seconds after it drops
    // (until the estimate follows: see DROP_REACTION).
    let settled = |f: &&Frame| {
        let t = f.at - t0;
        t < Duration::from_secs(15) || t > Duration::from_secs(15) + DROP_REACTION
    };
    let settled: Vec<&Frame> = frames.iter().filter(settled).collect();
    let complete = settled
        .iter()
        .filter(|f| {
            let bytes = (RATES[usize::from(f.layer)] / 8 / FPS) as usize;
            f.packets == bytes.div_ceil(1000)
        })
        .count();
    let incomplete: Vec<(u128, u8, usize)> = settled
        .iter()
        .filter(|f| f.packets != (RATES[usize::from(f.layer)] / 8 / FPS).div_ceil(1000) as usize)
        .map(|f| ((f.at - t0).as_millis(), f.layer, f.packets))
        .collect();
    println!("incomplete frames (ms, layer, packets): {incomplete:?}");
    assert!(
        complete * 100 >= settled.len() * 97,
        "{complete} of {} frames complete",
        settled.len()
    );

    let layer_at = |secs: f64| {
        let at = t0 + Duration::from_secs_f64(secs);
        frames.iter().rev().find(|f| f.at <= at).map(|f| f.layer)
    };
    assert_eq!(layer_at(14.9), Some(2), "top layer on 2 Mbit/s");
    // Down within DROP_REACTION of the drop, to a layer the link carries.
    let down = frames
        .iter()
        .filter(|f| f.at >= t0 + Duration::from_secs(15) + DROP_REACTION)
        .take_while(|f| f.at < t0 + Duration::from_secs(25))
        .map(|f| f.layer)
        .collect::<std::collections::BTreeSet<u8>>();
    assert!(down.iter().all(|l| *l < 2), "{down:?}");
    assert_eq!(layer_at(24.9), Some(0), "300 kbit/s carries the low layer");
    // Up again within RECOVERY of the link's return.
    let back = frames
        .iter()
        .find(|f| f.at >= t0 + Duration::from_secs(25) && f.layer == 2)
        .map(|f| f.at - t0);
    assert!(
        back.is_some_and(|at| at <= Duration::from_secs(25) + RECOVERY),
        "back on the top layer at {back:?}"
    );
    // Pictures keep coming: frames of some layer arrive in every second
    // but a few (the switch after the drop; a pause when the estimate on
    // the limited link dips below the low layer and the audio, until the
    // retry).
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for f in &frames {
        *per_second.entry((f.at - t0).as_secs()).or_default() += 1;
    }
    let frozen: Vec<u64> = (2..34)
        .filter(|s| per_second.get(s).copied().unwrap_or(0) < 10)
        .collect();
    assert!(
        frozen.len() <= 3 && frozen.iter().all(|s| (15..30).contains(s)),
        "seconds with under 10 frames: {frozen:?} ({per_second:?})"
    );
    let stats = w.legs[v].endpoint.stats().layers;
    assert!(stats.switches_down >= 1 && stats.switches_up >= 1);
    assert!(stats.estimate_bps > 1_000_000, "{stats:?}");
}
