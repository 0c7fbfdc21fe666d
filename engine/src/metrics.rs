//! Per-shard counters, written by one shard and read by the control thread.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! shard_metrics {
    ($( $field:ident, $kind:literal, $help:literal; )*) => {
        /// Counters of one shard. Each is written only by its shard
        /// (`Relaxed` stores, no contention) and read by `/metrics`.
        #[derive(Debug, Default)]
        pub struct ShardMetrics {
            $( pub $field: AtomicU64, )*
            /// Time from a packet's arrival on the node to its hand-off to the
            /// socket for this shard's last local viewer.
            pub forward_latency: LatencyHistogram,
        }

        impl ShardMetrics {
            /// Appends the Prometheus text of every shard's counters.
            pub fn render(shards: &[std::sync::Arc<ShardMetrics>], out: &mut String) {
                $(
                    let name = concat!("corecast_", stringify!($field));
                    let _ = writeln!(out, "# HELP {name} {}", $help);
                    let _ = writeln!(out, "# TYPE {name} {}", $kind);
                    for (i, m) in shards.iter().enumerate() {
                        let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", m.$field.load(Ordering::Relaxed));
                    }
                )*
                LatencyHistogram::render(
                    "corecast_forward_latency_seconds",
                    "Time from a packet's arrival to its hand-off to the socket, for the shard's last local viewer.",
                    shards.iter().map(|m| &m.forward_latency),
                    out,
                );
            }
        }
    };
}

shard_metrics! {
    endpoints, "gauge", "Endpoints held by the shard.";
    rx_packets_total, "counter", "Datagrams received on the shard's media sockets.";
    rx_bytes_total, "counter", "Bytes received on the shard's media sockets.";
    tx_packets_total, "counter", "Datagrams sent from the shard's media sockets.";
    tx_bytes_total, "counter", "Bytes sent from the shard's media sockets.";
    tx_gso_packets_total, "counter", "Datagrams of tx_packets_total that left in UDP GSO messages (runs to one peer).";
    ring_forwards_total, "counter", "Messages pushed onto rings toward other shards.";
    ring_drops_total, "counter", "Messages dropped because a ring toward another shard was full.";
    cross_shard_ingress_total, "counter", "Datagrams handled here for an endpoint of this shard that arrived at another shard (forwarded by it or by the control thread).";
    ingress_forwards_total, "counter", "Datagrams from a routed address forwarded over a ring to the shard that holds their endpoint.";
    routes, "gauge", "Addresses this shard forwards to an endpoint on another shard.";
    route_drops_total, "counter", "Routes refused because the shard's or the session's route table was full (their datagrams are dropped).";
    send_errors_total, "counter", "Datagrams the socket refused to send (buffer full or error).";
    bad_packets_total, "counter", "Datagrams dropped as unknown, malformed or refused.";
    media_packets_total, "counter", "RTP packets published by the shard's publishers.";
    media_dropped_total, "counter", "Media packets a viewer could not send: no payload type for the packet's codec, or older than the start of its source's run (reordered across a switch).";
    media_waiting_keyframe_total, "counter", "Video packets held back from viewers until the keyframe that starts their stream (new viewer, publisher switch).";
    keyframe_requests_total, "counter", "Keyframe requests (PLI) sent to publishers: at most one per track per keyframe interval, however many viewers ask.";
    keyframe_requests_limited_total, "counter", "Keyframe requests of viewers over their limit (one per 2 s per viewer), not passed on.";
    rpc_requests_total, "counter", "RPC messages of SDK connections passed to the control thread (within the size and rate limits).";
    rpc_too_large_total, "counter", "RPC messages of SDK connections refused for their size (over 16 KiB).";
    rpc_not_text_total, "counter", "RPC messages of SDK connections refused because they are not UTF-8 text.";
    rpc_rate_limited_total, "counter", "RPC messages of SDK connections refused over the rate limit (50 a second, bursts of 100).";
    control_drops_total, "counter", "STUN claims to the control thread dropped because its queue was full (clients retransmit).";
    claims_limited_total, "counter", "STUN claims for unknown ufrags dropped by the shard's rate limit (--stun-claims-per-second).";
    control_queued_total, "counter", "Lifecycle events to the control thread queued in the shard's outbox because the queue was full (retried, not lost).";
    control_retries_total, "counter", "Lifecycle events delivered from the shard's outbox on a retry.";
    control_outbox, "gauge", "Lifecycle events waiting in the shard's outbox.";
    control_outbox_drops_total, "counter", "Lifecycle events dropped because the shard's outbox was full (never expected).";
    timer_wakeups_total, "counter", "Wake-ups of the shard's timer task.";
    endpoint_timeouts_total, "counter", "Time inputs given to endpoints whose timeout was due.";
    layer_switches_up_total, "counter", "Video slots switched to a higher simulcast layer (at its keyframe).";
    layer_switches_down_total, "counter", "Video slots switched to a lower simulcast layer (at its keyframe).";
    video_pauses_total, "counter", "Times a video slot paused because not even the lowest layer fitted its viewer's bandwidth estimate.";
    video_slots_layer0, "gauge", "Video slots forwarding spatial layer 0 (the lowest, or the only one).";
    video_slots_layer1, "gauge", "Video slots forwarding spatial layer 1.";
    video_slots_layer2, "gauge", "Video slots forwarding spatial layer 2.";
    video_slots_layer3, "gauge", "Video slots forwarding spatial layer 3.";
    cluster_layer_subscriptions, "gauge", "Simulcast layer channels of tracks from other nodes that this node receives (shard 0; only layers its viewers want).";
    video_slots_paused, "gauge", "Video slots paused because no layer fits their viewer's bandwidth estimate.";
    estimated_legs, "gauge", "Viewer legs with a bandwidth estimate (adaptive WHEP viewers: those of simulcast streams, or ?adaptive=1).";
    estimate_bps_sum, "gauge", "Sum of the bandwidth estimates of estimated_legs, bits per second (divide for the mean).";
    moq_connections, "gauge", "MoQ (QUIC) connections the shard holds.";
    moq_connections_total, "counter", "MoQ connections the shard accepted (a client's first Initial).";
    moq_refused_total, "counter", "MoQ connections or requests refused: the shard full, a setup that failed or timed out, a watch or publish without the permission, a broadcast the client may not have.";
    moq_subscriptions_total, "counter", "Broadcasts (rooms) MoQ clients subscribed to.";
    moq_groups_total, "counter", "MoQ groups sent (one per video keyframe, one per second of audio).";
    moq_frames_total, "counter", "MoQ frames sent.";
    moq_bytes_total, "counter", "Bytes of MoQ frame payloads sent.";
    moq_frames_dropped_total, "counter", "Pictures not sent to MoQ clients: a packet lost, waiting for a keyframe, bad payloads.";
    moq_bad_datagrams_total, "counter", "Datagrams on the MoQ port that are not QUIC or name no connection of this node.";
    moq_misrouted_total, "counter", "Datagrams on the MoQ port for a connection of another shard (a client whose address changed), passed to that shard over the ring.";
    sip_rtp_bytes_total, "counter", "Bytes of RTP taken from SIP calls' phones.";
    sip_audio_frames_total, "counter", "Opus frames published from SIP calls (the phones' audio, 20 ms each).";
    sip_audio_errors_total, "counter", "Audio of SIP calls that could not be decoded or encoded.";
    sip_rtp_refused_total, "counter", "Datagrams on SIP calls' RTP and RTCP sockets refused: from an address the call did not signal, not RTP, or of a payload type not agreed.";
    rtmp_connections, "gauge", "RTMP connections the shard holds.";
    rtmp_connections_total, "counter", "RTMP connections the shard accepted.";
    rtmp_rejected_total, "counter", "RTMP connections closed at once because the shard was at --max-endpoints-per-shard.";
    rtmp_bytes_total, "counter", "Bytes received on RTMP connections.";
    rtmp_video_frames_total, "counter", "Video frames (H.264, AV1, VP9) received from RTMP publishers.";
    rtmp_audio_frames_total, "counter", "Opus frames published from RTMP publishers (transcoded from AAC or passed through).";
    rtmp_b_frames_total, "counter", "Video frames with B-frame reordering (composition time) from RTMP publishers: WebRTC players show them out of order.";
    rtmp_transcode_microseconds_total, "counter", "Time the shard spent transcoding AAC to Opus.";
    rtmp_audio_errors_total, "counter", "AAC configurations or frames that could not be decoded.";
    rtmp_unsupported_frames_total, "counter", "Frames of a codec corecast does not forward (HEVC, VP6, MP3, ...), dropped.";
    rtmp_ignored_total, "counter", "RTMP messages and tags not read (metadata, commands corecast does not serve, media before publish).";
    rtmp_protocol_errors_total, "counter", "RTMP connections closed for a protocol error (bad handshake, chunk stream, AMF, limits).";
    rtmp_play_refused_total, "counter", "RTMP play requests refused (corecast ingests RTMP; viewers watch over WHEP).";
    rtmp_codec_refused_total, "counter", "RTMP publishes ended because their video codec cannot be forwarded (HEVC, legacy codecs).";
    rtmp_timeouts_total, "counter", "RTMP connections closed by the handshake or idle timeout.";
    rtmp_write_overflows_total, "counter", "RTMP connections closed because they did not read what the server sent.";
}

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BOUNDS_US: [u64; 9] = [10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000];

/// A Prometheus histogram of durations, written by one shard (relaxed
/// atomics, no locks) and read by `/metrics`.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is everything above the bounds.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render<'a>(
        name: &str,
        help: &str,
        shards: impl Iterator<Item = &'a LatencyHistogram>,
        out: &mut String,
    ) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, h) in shards.enumerate() {
            let mut cumulative = 0;
            for (b, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
                cumulative += h.buckets[b].load(Ordering::Relaxed);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{shard=\"{i}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += h.buckets[LATENCY_BOUNDS_US.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{i}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{shard=\"{i}\"}} {sum}");
            let _ = writeln!(
                out,
                "{name}_count{{shard=\"{i}\"}} {}",
                h.count.load(Ordering::Relaxed)
            );
        }
    }
}

/// Adds one to a counter.
#[inline]
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Moves a gauge that one shard writes from `was` to `now` (its share of
/// the gauge changed): wrapping arithmetic, the sum stays right.
#[inline]
pub fn shift(c: &AtomicU64, was: u64, now: u64) {
    if now != was {
        c.fetch_add(now.wrapping_sub(was), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn latency_histogram_renders_cumulative_buckets() {
        let m = Arc::new(ShardMetrics::default());
        m.forward_latency.record(Duration::from_micros(5));
        m.forward_latency.record(Duration::from_micros(80));
        m.forward_latency.record(Duration::from_secs(1));
        let mut out = String::new();
        ShardMetrics::render(&[m], &mut out);
        assert!(
            out.contains("corecast_forward_latency_seconds_bucket{shard=\"0\",le=\"0.00001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("corecast_forward_latency_seconds_bucket{shard=\"0\",le=\"0.0001\"} 2")
        );
        assert!(out.contains("corecast_forward_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3"));
        assert!(out.contains("corecast_forward_latency_seconds_count{shard=\"0\"} 3"));
        assert!(out.contains("corecast_endpoints{shard=\"0\"} 0"));
    }
}
