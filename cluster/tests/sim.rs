//! Several cluster nodes on a simulated network, in simulated time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_cluster::{
    Cluster, ClusterConfig, ClusterEvent, ClusterOutput, NodeRole, PeerRecord, TrackRecord,
};
use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind};

const STEP: Duration = Duration::from_millis(5);
const MAX_HOPS_PER_STEP: usize = 16;

fn addr(node: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + node as u16))
}

struct Net {
    now: Instant,
    nodes: BTreeMap<u32, (Cluster, Instant)>,
    /// Nodes whose datagrams are lost both ways (killed).
    down: Vec<u32>,
    events: Vec<(u32, Instant, ClusterEvent)>,
    /// Datagrams sent, per sender.
    sent: BTreeMap<u32, u64>,
    deferred: Vec<(u32, u32, Vec<u8>)>,
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        Net {
            now,
            nodes: BTreeMap::new(),
            down: Vec::new(),
            events: Vec::new(),
            sent: BTreeMap::new(),
            deferred: Vec::new(),
        }
    }

    fn config(&self, node: u32, session: u64, secret: &str, seeds: Vec<u32>) -> ClusterConfig {
        ClusterConfig {
            node_id: node,
            zone: "z1".into(),
            role: NodeRole::All,
            secret: secret.into(),
            local: addr(node),
            seeds: seeds.into_iter().map(addr).collect(),
            http_url: format!("http://127.0.0.1:{}", 8000 + node),
            session,
            epoch_ms: 1_700_000_000_000,
            start: self.now,
        }
    }

    fn add(&mut self, node: u32, seeds: Vec<u32>) {
        self.add_with(node, 1000 + node as u64, "secret", seeds);
    }

    fn add_with(&mut self, node: u32, session: u64, secret: &str, seeds: Vec<u32>) {
        let cfg = self.config(node, session, secret, seeds);
        self.down.retain(|n| *n != node);
        self.nodes.insert(node, (Cluster::new(cfg), self.now));
    }

    fn node(&mut self, node: u32) -> &mut Cluster {
        &mut self.nodes.get_mut(&node).expect("node").0
    }

    /// Delivers datagrams at once, hop after hop, up to a few hops; the
    /// rest wait for the next step (a routing loop while routes converge
    /// would otherwise never end at one instant).
    fn flush(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        for (from, to, data) in deferred {
            self.deliver(from, to, &data);
        }
        for round in 0..MAX_HOPS_PER_STEP {
            let mut moved = false;
            let ids: Vec<u32> = self.nodes.keys().copied().collect();
            for id in ids {
                loop {
                    let (c, wake) = self.nodes.get_mut(&id).expect("node");
                    match c.poll_output() {
                        ClusterOutput::Timeout(at) => {
                            *wake = at;
                            break;
                        }
                        ClusterOutput::Event(e) => self.events.push((id, self.now, e)),
                        ClusterOutput::Transmit(t) => {
                            moved = true;
                            *self.sent.entry(id).or_default() += 1;
                            if self.down.contains(&id) {
                                continue;
                            }
                            let to = u32::from(t.to.port() - 7000);
                            if round + 1 == MAX_HOPS_PER_STEP {
                                self.deferred.push((id, to, t.data));
                            } else {
                                self.deliver(id, to, &t.data);
                            }
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, from: u32, to: u32, data: &[u8]) {
        if self.down.contains(&to) || self.down.contains(&from) {
            return;
        }
        let now = self.now;
        if let Some((dest, _)) = self.nodes.get_mut(&to) {
            dest.handle_datagram(now, addr(from), data);
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            for (c, wake) in self.nodes.values_mut() {
                if *wake <= now {
                    c.handle_timeout(now);
                }
            }
            self.flush();
        }
    }

    fn take_events(&mut self, node: u32) -> Vec<ClusterEvent> {
        let mut mine = Vec::new();
        self.events.retain(|(n, _, e)| {
            if *n == node {
                mine.push(e.clone());
                false
            } else {
                true
            }
        });
        mine
    }

    /// A three-node cluster, nodes 2 and 3 seeded with node 1 only.
    fn three() -> Net {
        let mut net = Net::new();
        net.add(1, vec![]);
        net.add(2, vec![1]);
        net.add(3, vec![1]);
        net.run(Duration::from_secs(3));
        net
    }
}

fn record(room: &str, channel: ChannelId) -> PeerRecord {
    PeerRecord {
        room: room.into(),
        peer: "p1".into(),
        node: 0,
        session: 0,
        transport: "whip".into(),
        metadata: "{}".into(),
        since_ms: 0,
        refresh: 0,
        tracks: vec![TrackRecord {
            name: "video".into(),
            kind: MediaKind::Video,
            channel: channel.0,
            codecs: vec![CodecInfo::new(Codec::Vp8, 90_000)],
            muted: false,
            layers: 1,
        }],
    }
}

#[test]
fn one_seed_is_enough_to_find_every_node() {
    let mut net = Net::three();
    for n in 1..=3u32 {
        let now = net.now;
        let view = net.node(n).view(now);
        let alive: Vec<u32> = view
            .members
            .iter()
            .filter(|m| m.alive)
            .map(|m| m.node)
            .collect();
        let mut expected: Vec<u32> = (1..=3).filter(|m| *m != n).collect();
        expected.sort();
        assert_eq!(alive, expected, "node {n} sees {alive:?}");
        assert!(
            view.members.iter().all(|m| m.connected),
            "node {n}: {view:?}"
        );
    }
    // Nodes 2 and 3 were never told of each other: presence gossip did it.
    let events = net.take_events(2);
    assert!(events.contains(&ClusterEvent::NodeUp(3)), "{events:?}");
}

#[test]
fn a_room_entry_is_seen_everywhere_and_its_deletion_within_two_seconds() {
    let mut net = Net::three();
    let ch = ChannelId::for_track("room", "p1", "video");
    net.take_events(2);
    net.take_events(3);
    let now = net.now;
    net.node(1).set_peer(now, record("room", ch));
    net.run(Duration::from_secs(2));
    for n in [2, 3] {
        let ups: Vec<PeerRecord> = net
            .take_events(n)
            .into_iter()
            .filter_map(|e| match e {
                ClusterEvent::PeerUp(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(ups.len(), 1, "node {n}: {ups:?}");
        assert_eq!(ups[0].node, 1);
        assert_eq!(ups[0].tracks[0].channel_id(), ch);
    }
    // The owner does not hear its own entry back.
    assert!(!net
        .take_events(1)
        .iter()
        .any(|e| matches!(e, ClusterEvent::PeerUp(_))));
    let now = net.now;
    net.node(1).del_peer(now, "room", "p1");
    let t0 = net.now;
    net.run(Duration::from_secs(2));
    for n in [2, 3] {
        let downs: Vec<Instant> = net
            .events
            .iter()
            .filter(|(m, _, e)| *m == n && matches!(e, ClusterEvent::PeerDown(_)))
            .map(|(_, at, _)| *at)
            .collect();
        assert_eq!(downs.len(), 1, "node {n}");
        assert!(downs[0] - t0 < Duration::from_secs(2));
    }
}

fn media_of(events: &[ClusterEvent], ch: ChannelId) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            ClusterEvent::Media { channel, data } if *channel == ch => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_channel_reaches_every_subscribed_node_bit_exact_and_in_order() {
    let mut net = Net::three();
    let ch = ChannelId::for_track("room", "p1", "video");
    let now = net.now;
    net.node(1).publish_start(now, ch);
    net.node(2).subscribe(now, ch);
    net.node(3).subscribe(now, ch);
    net.run(Duration::from_secs(2));
    net.take_events(2);
    net.take_events(3);
    let sent_before = net.sent.get(&1).copied().unwrap_or(0);
    let payloads: Vec<Vec<u8>> = (0..200u32)
        .map(|i| (0..(100 + i % 1000)).map(|b| (b ^ i) as u8).collect())
        .collect();
    for p in &payloads {
        let now = net.now;
        net.node(1).publish(now, ch, p.clone());
        net.flush();
    }
    let sent = net.sent.get(&1).copied().unwrap_or(0) - sent_before;
    // Once per next hop (2 here), nothing else in between (no timer ran).
    assert_eq!(sent, 2 * payloads.len() as u64);
    for n in [2, 3] {
        assert_eq!(media_of(&net.take_events(n), ch), payloads, "node {n}");
    }
    // A node that unsubscribes gets nothing more.
    let now = net.now;
    net.node(3).unsubscribe(now, ch);
    net.run(Duration::from_millis(500));
    net.take_events(2);
    let now = net.now;
    net.node(1).publish(now, ch, vec![1, 2, 3]);
    net.run(Duration::from_millis(100));
    assert_eq!(media_of(&net.take_events(2), ch), vec![vec![1, 2, 3]]);
    assert!(media_of(&net.take_events(3), ch).is_empty());
    // A keyframe request travels back to the publishing node.
    let now = net.now;
    net.node(2).request_keyframe(now, ch, None);
    net.run(Duration::from_millis(300));
    assert!(net
        .take_events(1)
        .contains(&ClusterEvent::Keyframe(ch, None)));
    // Of one simulcast layer: only that layer's encoder is asked.
    let now = net.now;
    net.node(2).request_keyframe(now, ch, Some(2));
    net.run(Duration::from_millis(300));
    assert!(net
        .take_events(1)
        .contains(&ClusterEvent::Keyframe(ch, Some(2))));
}

#[test]
fn a_killed_node_is_down_within_three_seconds_and_others_keep_the_media() {
    let mut net = Net::three();
    let ch = ChannelId::for_track("room", "p1", "video");
    let now = net.now;
    net.node(1).set_peer(now, record("room", ch));
    net.node(3).set_peer(now, record("room3", ChannelId(99)));
    net.node(1).publish_start(now, ch);
    net.node(2).subscribe(now, ch);
    net.node(3).subscribe(now, ch);
    net.run(Duration::from_secs(2));
    net.take_events(1);
    net.take_events(2);
    net.down.push(3);
    let t0 = net.now;
    // Media keeps flowing to node 2 every 20 ms while node 3 is dead.
    for i in 0..200u32 {
        let now = net.now;
        net.node(1).publish(now, ch, i.to_be_bytes().to_vec());
        net.run(Duration::from_millis(20));
    }
    let node2: Vec<ClusterEvent> = net
        .events
        .iter()
        .filter(|(n, _, _)| *n == 2)
        .map(|(_, _, e)| e.clone())
        .collect();
    let expected: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(media_of(&node2, ch), expected);
    for n in [1, 2] {
        let down_at = net
            .events
            .iter()
            .find(|(m, _, e)| *m == n && *e == ClusterEvent::NodeDown(3))
            .map(|(_, at, _)| *at)
            .expect("node 3 down");
        assert!(down_at - t0 <= Duration::from_secs(3), "node {n}");
        // Its room entry went with it.
        assert!(net.events.iter().any(
            |(m, _, e)| *m == n && matches!(e, ClusterEvent::PeerDown(r) if r.room == "room3")
        ));
        let now = net.now;
        let view = net.node(n).view(now);
        assert!(view.members.iter().any(|m| m.node == 3 && !m.alive));
    }
    // Restarted with the same id (new session): it rejoins and gets media again.
    net.events.clear();
    net.add_with(3, 5555, "secret", vec![1]);
    let now = net.now;
    net.node(3).subscribe(now, ch);
    // Node 1's connection to node 3's former self times out first (10 s
    // without pong); until then the new node's attempts are refused.
    let mut waited = Duration::ZERO;
    let mut got = Vec::new();
    while got.is_empty() && waited < Duration::from_secs(15) {
        net.run(Duration::from_millis(500));
        waited += Duration::from_millis(500);
        let now = net.now;
        net.node(1).publish(now, ch, vec![7]);
        net.run(Duration::from_millis(20));
        got = media_of(&net.take_events(3), ch);
    }
    assert_eq!(
        got,
        vec![vec![7]],
        "restarted node got no media in {waited:?}"
    );
    assert!(net.take_events(1).contains(&ClusterEvent::NodeUp(3)));
    let now = net.now;
    net.node(1).publish(now, ch, vec![9]);
    net.run(Duration::from_millis(100));
    assert_eq!(media_of(&net.take_events(3), ch), vec![vec![9]]);
}

#[test]
fn wrong_secret_and_garbage_are_counted_and_change_nothing() {
    let mut net = Net::new();
    net.add(1, vec![]);
    net.add_with(4, 4444, "not-the-secret", vec![1]);
    net.run(Duration::from_secs(3));
    let now = net.now;
    let view = net.node(1).view(now);
    assert!(view.members.is_empty(), "{view:?}");
    assert!(view.stats.rejected_secret > 0);
    let now = net.now;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for len in 0..2000usize {
        let data: Vec<u8> = (0..len % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        net.node(1).handle_datagram(now, addr(9), &data);
    }
    let mut cc = b"CC\x01\x01".to_vec();
    cc.extend_from_slice(&[0u8; 40]);
    net.node(1).handle_datagram(now, addr(9), &cc);
    let stats = net.node(1).stats();
    assert!(stats.rejected_garbage >= 1999, "{stats:?}");
    assert!(stats.rejected_secret >= 1);
    net.run(Duration::from_secs(1));
    let now = net.now;
    assert!(net.node(1).view(now).members.is_empty());
}

/// Where the room map's entries live (atm0s-sdn's relay for the key) is one
/// node; when that node dies, a deletion made meanwhile never reaches the
/// others through the new relay. Entries are refreshed every REFRESH, so the
/// others drop one they stop hearing about within STALE.
#[test]
fn a_deletion_is_seen_when_another_node_dies_meanwhile() {
    use corecast_cluster::{REFRESH, STALE};
    // As in the engine's room test: node 9 dies, node 2 watches node 1.
    for (dead, watcher) in [(9u32, 2u32), (2, 9)] {
        let mut net = Net::new();
        net.add(1, vec![]);
        net.add(2, vec![1]);
        net.add(9, vec![1]);
        net.run(Duration::from_secs(3));
        let ch = ChannelId::for_track("room", "p1", "video");
        let now = net.now;
        net.node(1).set_peer(now, record("room", ch));
        net.run(Duration::from_secs(2));
        assert!(net
            .take_events(watcher)
            .iter()
            .any(|e| matches!(e, ClusterEvent::PeerUp(_))));
        net.down.push(dead);
        net.run(Duration::from_secs(1));
        let now = net.now;
        net.node(1).del_peer(now, "room", "p1");
        let t0 = net.now;
        net.run(Duration::from_secs(25));
        let downs: Vec<Instant> = net
            .events
            .iter()
            .filter(|(m, _, e)| {
                *m == watcher && matches!(e, ClusterEvent::PeerDown(r) if r.peer == "p1")
            })
            .map(|(_, at, _)| *at)
            .collect();
        eprintln!(
            "node {dead} died: node {watcher} saw the deletion after {:?}",
            downs.first().map(|at| *at - t0)
        );
        assert_eq!(downs.len(), 1, "node {watcher} hears of the deletion once");
        // At most STALE after the last refresh it heard.
        assert!(downs[0] - t0 <= STALE + REFRESH, "{:?}", downs[0] - t0);
        assert!(downs[0] - t0 < Duration::from_secs(20));
        // Refreshes change nothing on the way: no second PeerUp.
        assert!(!net
            .take_events(watcher)
            .iter()
            .any(|e| matches!(e, ClusterEvent::PeerUp(_))));
    }
}
