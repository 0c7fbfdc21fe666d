//! The checks of the fuzz targets of corecast-cluster, one per target. The
//! libFuzzer targets in `fuzz_targets/` and their seeded twins in
//! `tests/hostile_input.rs` both call these, so CI runs the same checks on
//! every change that the fuzzer runs for hours.
#![allow(dead_code)] // each fuzz target uses one of them

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_cluster::envelope::{Kind, Sealer};
use corecast_cluster::{Cluster, ClusterConfig, ClusterOutput, NodeRole};
use corecast_media::{decode_media, encode_media, ChannelId};

/// The cluster secret of the node under test.
pub const SECRET: &str = "fuzz";

/// The address of node `id` (1 is the node under test, 2 its seed).
pub fn addr(id: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16))
}

/// The configuration of node `id` of the fuzzed cluster.
pub fn config(id: u32, seeds: Vec<SocketAddr>, start: Instant) -> ClusterConfig {
    ClusterConfig {
        node_id: id,
        zone: "z".into(),
        role: NodeRole::All,
        secret: SECRET.into(),
        local: addr(id),
        seeds,
        http_url: format!("http://127.0.0.1:{}", 8000 + id),
        session: u64::from(id),
        epoch_ms: 1_700_000_000_000,
        start,
    }
}

/// Target `cluster_port`: datagrams at the cluster port of node 1, from its
/// seed node 2, as they come (the envelope must refuse them) and sealed with
/// the right secret (so that the presence decoder and atm0s-sdn's parsers
/// see them too; an odd first byte picks presence). Time moves 7 ms an
/// input. Nothing panics, and the node always drains to a timeout.
pub struct ClusterPort {
    cluster: Cluster,
    now: Instant,
    sealer: Sealer,
    frame: Vec<u8>,
}

impl ClusterPort {
    pub fn new(start: Instant) -> ClusterPort {
        ClusterPort {
            cluster: Cluster::new(config(1, vec![addr(2)], start)),
            now: start,
            sealer: Sealer::new(SECRET),
            frame: Vec::new(),
        }
    }

    /// The node under test (for its counters).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn input(&mut self, data: &[u8]) {
        self.now += Duration::from_millis(7);
        let now = self.now;
        let from = addr(2);
        self.cluster.handle_datagram(now, from, data);
        let kind = if data.first().is_some_and(|b| b & 1 == 1) {
            Kind::Presence
        } else {
            Kind::Sdn
        };
        self.frame.clear();
        self.sealer
            .seal(kind, data.get(1..).unwrap_or_default(), &mut self.frame);
        self.cluster.handle_datagram(now, from, &self.frame);
        self.cluster.handle_timeout(now);
        while !matches!(self.cluster.poll_output(), ClusterOutput::Timeout(_)) {}
    }
}

/// Target `media_wire`: media packets from other nodes. What decodes
/// re-encodes to the same bytes. Returns whether it decoded.
pub fn media_wire(now: Instant, data: &[u8]) -> bool {
    let Ok(p) = decode_media(ChannelId(1), data, now) else {
        return false;
    };
    let mut again = Vec::new();
    encode_media(&p, &mut again);
    assert_eq!(again, data);
    true
}
