//! Datagrams at the cluster port: as they come (the envelope must refuse
//! them), and sealed with the right secret (so that the presence decoder and
//! atm0s-sdn's parsers see them too).
#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use corecast_cluster::envelope::{Kind, Sealer};
use corecast_cluster::{Cluster, ClusterConfig, ClusterOutput, NodeRole};

thread_local! {
    static NODE: RefCell<(Cluster, Instant)> = RefCell::new({
        // A fuzz harness, like a test: it owns its clock.
        let start = Instant::now();
        let cluster = Cluster::new(ClusterConfig {
            node_id: 1,
            zone: "z".into(),
            role: NodeRole::All,
            secret: "fuzz".into(),
            local: "127.0.0.1:7001".parse().unwrap(),
            seeds: vec!["127.0.0.1:7002".parse().unwrap()],
            http_url: "http://127.0.0.1:8001".into(),
            session: 1,
            epoch_ms: 1_700_000_000_000,
            start,
        });
        (cluster, start)
    });
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    NODE.with(|n| {
        let (cluster, now) = &mut *n.borrow_mut();
        *now += Duration::from_millis(7);
        let from = "127.0.0.1:7002".parse().unwrap();
        cluster.handle_datagram(*now, from, data);
        let sealer = Sealer::new("fuzz");
        let kind = if data.first().is_some_and(|b| b & 1 == 1) {
            Kind::Presence
        } else {
            Kind::Sdn
        };
        let mut frame = Vec::new();
        sealer.seal(kind, data.get(1..).unwrap_or_default(), &mut frame);
        cluster.handle_datagram(*now, from, &frame);
        cluster.handle_timeout(*now);
        while !matches!(cluster.poll_output(), ClusterOutput::Timeout(_)) {}
    });
});
