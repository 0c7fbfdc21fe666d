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
    ring_forwards_total, "counter", "Messages pushed onto rings toward other shards.";
    ring_drops_total, "counter", "Messages dropped because a ring toward another shard was full.";
    cross_shard_ingress_total, "counter", "Datagrams received here for an endpoint held by another shard.";
    send_errors_total, "counter", "Datagrams the socket refused to send (buffer full or error).";
    bad_packets_total, "counter", "Datagrams dropped as unknown, malformed or refused.";
    media_packets_total, "counter", "RTP packets published by the shard's publishers.";
    control_drops_total, "counter", "Events to the control thread dropped because its queue was full.";
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
