//! How a gateway chooses the media node for a request.

use std::net::IpAddr;

use serde::Serialize;

use crate::zones::ZoneTable;

/// A viewer stays with a node that already has its stream up to this load.
const STICKY_LOAD: f32 = 0.8;

/// What a gateway knows of one live media node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub node: u32,
    pub zone: String,
    /// Base URL of its HTTP API, e.g. `http://10.0.0.2:8080`.
    pub url: String,
    pub shards: u32,
    pub endpoints: u32,
    /// Process CPU in percent of one core (over 100 with several shards).
    pub cpu_percent: f32,
    /// Its endpoint limit per shard; 0: unlimited.
    pub max_endpoints_per_shard: u32,
    /// Streams it publishes or relays to its viewers.
    pub streams: Vec<String>,
}

/// What the client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Publish,
    View,
}

impl Candidate {
    fn capacity(&self) -> Option<u64> {
        (self.max_endpoints_per_shard > 0)
            .then(|| u64::from(self.shards.max(1)) * u64::from(self.max_endpoints_per_shard))
    }

    /// Load in [0, ∞): the larger of the endpoint share of its limit and
    /// the CPU share of its shards.
    pub fn load(&self) -> f32 {
        let endpoints = self
            .capacity()
            .map(|c| self.endpoints as f32 / c as f32)
            .unwrap_or(0.0);
        let cpu = self.cpu_percent / (100.0 * self.shards.max(1) as f32);
        endpoints.max(cpu)
    }

    pub fn is_full(&self) -> bool {
        self.capacity()
            .is_some_and(|c| u64::from(self.endpoints) >= c)
    }
}

/// The node for a request in `zone`: a viewer stays with a node that has the
/// stream unless it is loaded above 0.8; otherwise the least loaded node;
/// ties go to the lowest node id. Full nodes are never chosen.
pub fn choose_in_zone<'a>(
    candidates: &'a [Candidate],
    zone: &str,
    intent: Intent,
    stream: &str,
) -> Option<&'a Candidate> {
    let usable = || {
        candidates
            .iter()
            .filter(move |c| c.zone == zone && !c.is_full())
    };
    let least = |it: &mut dyn Iterator<Item = &'a Candidate>| {
        it.min_by(|a, b| a.load().total_cmp(&b.load()).then(a.node.cmp(&b.node)))
    };
    if intent == Intent::View {
        let mut sticky =
            usable().filter(|c| c.streams.iter().any(|s| s == stream) && c.load() <= STICKY_LOAD);
        if let Some(c) = least(&mut sticky) {
            return Some(c);
        }
    }
    least(&mut usable())
}

/// A gateway's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Route<'a> {
    pub zone: String,
    pub node: &'a Candidate,
    /// The client's zone had no usable node.
    pub fell_back: bool,
}

/// The client's zone by the table (the gateway's own zone when no CIDR
/// matches); if it has no usable node, the nearest zone that has one.
pub fn route<'a>(
    table: &ZoneTable,
    own_zone: &str,
    client: IpAddr,
    candidates: &'a [Candidate],
    intent: Intent,
    stream: &str,
) -> Option<Route<'a>> {
    let zone = table.zone_of(client).unwrap_or(own_zone);
    if let Some(node) = choose_in_zone(candidates, zone, intent, stream) {
        return Some(Route {
            zone: zone.to_string(),
            node,
            fell_back: false,
        });
    }
    let mut live: Vec<&str> = candidates
        .iter()
        .filter(|c| !c.is_full())
        .map(|c| c.zone.as_str())
        .collect();
    live.sort();
    live.dedup();
    let other = table.nearest_live(zone, &live)?;
    let node = choose_in_zone(candidates, other, intent, stream)?;
    Some(Route {
        zone: other.to_string(),
        node,
        fell_back: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::ZoneSpec;

    fn node(node: u32, zone: &str, endpoints: u32, cpu: f32, streams: &[&str]) -> Candidate {
        Candidate {
            node,
            zone: zone.into(),
            url: format!("http://n{node}"),
            shards: 2,
            endpoints,
            cpu_percent: cpu,
            max_endpoints_per_shard: 100,
            streams: streams.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_least_loaded_node_wins_and_ties_go_to_the_lowest_id() {
        let c = vec![
            node(3, "a", 50, 10.0, &[]),
            node(1, "a", 20, 10.0, &[]),
            node(2, "a", 20, 10.0, &[]),
        ];
        assert_eq!(
            choose_in_zone(&c, "a", Intent::Publish, "s").unwrap().node,
            1
        );
        // CPU counts too: node 1 is busy.
        let c = vec![node(1, "a", 0, 150.0, &[]), node(2, "a", 40, 10.0, &[])];
        assert_eq!(
            choose_in_zone(&c, "a", Intent::Publish, "s").unwrap().node,
            2
        );
        assert!(choose_in_zone(&c, "b", Intent::Publish, "s").is_none());
    }

    #[test]
    fn full_nodes_are_skipped() {
        let c = vec![node(1, "a", 200, 0.0, &[]), node(2, "a", 190, 190.0, &[])];
        assert_eq!(
            choose_in_zone(&c, "a", Intent::Publish, "s").unwrap().node,
            2
        );
        let c = vec![node(1, "a", 200, 0.0, &["s"])];
        assert!(choose_in_zone(&c, "a", Intent::View, "s").is_none());
    }

    #[test]
    fn viewers_stick_to_a_node_with_the_stream_unless_it_is_loaded() {
        let c = vec![node(1, "a", 10, 0.0, &[]), node(2, "a", 100, 0.0, &["s"])];
        assert_eq!(choose_in_zone(&c, "a", Intent::View, "s").unwrap().node, 2);
        assert_eq!(
            choose_in_zone(&c, "a", Intent::Publish, "s").unwrap().node,
            1
        );
        assert_eq!(
            choose_in_zone(&c, "a", Intent::View, "other").unwrap().node,
            1
        );
        let c = vec![node(1, "a", 10, 0.0, &[]), node(2, "a", 170, 0.0, &["s"])];
        assert_eq!(choose_in_zone(&c, "a", Intent::View, "s").unwrap().node, 1);
    }

    fn table() -> ZoneTable {
        ZoneTable::new(vec![
            ZoneSpec {
                name: "eu".into(),
                cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                location: Some((50.0, 8.0)),
            },
            ZoneSpec {
                name: "us".into(),
                cidrs: vec!["192.168.0.0/16".parse().unwrap()],
                location: Some((40.0, -74.0)),
            },
            ZoneSpec {
                name: "asia".into(),
                cidrs: vec![],
                location: Some((35.0, 139.0)),
            },
        ])
        .unwrap()
    }

    #[test]
    fn clients_go_to_their_zone_else_the_nearest_live_one() {
        let t = table();
        let c = vec![
            node(1, "eu", 0, 0.0, &[]),
            node(2, "us", 0, 0.0, &[]),
            node(3, "asia", 0, 0.0, &[]),
        ];
        let r = route(
            &t,
            "asia",
            "10.0.0.7".parse().unwrap(),
            &c,
            Intent::Publish,
            "s",
        )
        .unwrap();
        assert_eq!((r.node.node, r.fell_back), (1, false));
        let r = route(
            &t,
            "asia",
            "192.168.3.3".parse().unwrap(),
            &c,
            Intent::Publish,
            "s",
        )
        .unwrap();
        assert_eq!(r.node.node, 2);
        // Unknown client: the gateway's own zone.
        let r = route(
            &t,
            "asia",
            "8.8.8.8".parse().unwrap(),
            &c,
            Intent::Publish,
            "s",
        )
        .unwrap();
        assert_eq!(r.node.node, 3);
        // eu is down: us is nearer to eu than asia is.
        let c = vec![node(2, "us", 0, 0.0, &[]), node(3, "asia", 0, 0.0, &[])];
        let r = route(
            &t,
            "asia",
            "10.0.0.7".parse().unwrap(),
            &c,
            Intent::Publish,
            "s",
        )
        .unwrap();
        assert_eq!((r.node.node, r.zone.as_str(), r.fell_back), (2, "us", true));
        assert!(route(
            &t,
            "eu",
            "10.0.0.7".parse().unwrap(),
            &[],
            Intent::View,
            "s"
        )
        .is_none());
    }

    #[test]
    fn without_a_table_the_own_zone_is_used() {
        let c = vec![node(1, "default", 0, 0.0, &[])];
        let r = route(
            &ZoneTable::default(),
            "default",
            "1.2.3.4".parse().unwrap(),
            &c,
            Intent::View,
            "s",
        )
        .unwrap();
        assert_eq!(r.node.node, 1);
    }
}
