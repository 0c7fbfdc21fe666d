//! Membership: who is in the cluster, where, with what load, alive or not.
//!
//! Every node sends a small presence message to every node it knows, and to
//! its seeds, each [`PRESENCE_INTERVAL`]. A node silent for
//! [`PRESENCE_TIMEOUT`] is down: gateways stop choosing it and the node's
//! atm0s-sdn connection to it is dropped at once (atm0s-sdn alone would wait
//! ten seconds). Presence also carries the addresses of the nodes the sender
//! knows, so a node given one seed finds all the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often a node announces itself.
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);
/// Silence after which a node is down.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_millis(2500);
/// A down node is forgotten after this long.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// An address heard of through gossip is probed this long.
const PROBE_FOR: Duration = Duration::from_secs(10);

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Serves endpoints (WHIP, WHEP); never redirects.
    Media,
    /// Redirects signalling to a media node; serves no media.
    Gateway,
    /// Both: serves what reaches it (the default, all-in-one).
    All,
}

impl NodeRole {
    pub fn serves_media(self) -> bool {
        matches!(self, NodeRole::Media | NodeRole::All)
    }
}

/// A node's load as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub shards: u32,
    pub endpoints: u32,
    /// Process CPU in percent of one core.
    pub cpu_percent: f32,
    /// 0: unlimited.
    pub max_endpoints_per_shard: u32,
    /// Streams with a publisher or viewers on this node.
    pub streams: Vec<String>,
}

/// What one presence message says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: u32,
    /// Random per process start: a restarted node has a new one.
    pub session: u64,
    pub zone: String,
    pub role: NodeRole,
    /// Base URL of the node's HTTP API, for redirects.
    pub http_url: String,
    pub load: NodeLoad,
    /// Nodes the sender hears from, with the address it hears them at.
    pub known: Vec<(u32, SocketAddr)>,
}

/// One other node.
#[derive(Debug, Clone)]
pub struct Member {
    pub info: NodeInfo,
    /// Where its presence comes from (its cluster port as seen from here).
    pub addr: SocketAddr,
    pub last_seen: Instant,
    pub alive: bool,
}

/// A change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A node appeared, came back, or restarted (new session).
    Up { node: u32, addr: SocketAddr },
    /// A node fell silent.
    Down { node: u32 },
}

/// The membership table of one node.
pub struct Presence {
    node: u32,
    seeds: Vec<SocketAddr>,
    members: BTreeMap<u32, Member>,
    probes: BTreeMap<SocketAddr, Instant>,
    next_send: Instant,
}

impl Presence {
    pub fn new(node: u32, seeds: Vec<SocketAddr>, now: Instant) -> Presence {
        Presence {
            node,
            seeds,
            members: BTreeMap::new(),
            probes: BTreeMap::new(),
            next_send: now,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, node: u32) -> Option<&Member> {
        self.members.get(&node)
    }

    pub fn is_alive(&self, node: u32) -> bool {
        node == self.node || self.members.get(&node).is_some_and(|m| m.alive)
    }

    /// Live nodes with their addresses, for gossip.
    pub fn known(&self) -> Vec<(u32, SocketAddr)> {
        self.members
            .values()
            .filter(|m| m.alive)
            .map(|m| (m.info.node, m.addr))
            .collect()
    }

    pub fn next_send(&self) -> Instant {
        self.next_send
    }

    /// A presence message from `from`.
    pub fn on_message(&mut self, now: Instant, from: SocketAddr, info: NodeInfo) -> Option<Change> {
        if info.node == self.node {
            return None;
        }
        for (node, addr) in &info.known {
            let heard = *node != self.node && !self.members.values().any(|m| m.addr == *addr);
            if heard {
                self.probes.insert(*addr, now + PROBE_FOR);
            }
        }
        self.probes.remove(&from);
        let node = info.node;
        let change = match self.members.get(&node) {
            Some(m) if m.alive && m.info.session == info.session && m.addr == from => None,
            _ => Some(Change::Up { node, addr: from }),
        };
        self.members.insert(
            node,
            Member {
                info,
                addr: from,
                last_seen: now,
                alive: true,
            },
        );
        change
    }

    /// Marks silent nodes down; returns the changes and, when it is time,
    /// the addresses to send this node's presence to.
    pub fn on_tick(&mut self, now: Instant) -> (Vec<Change>, Vec<SocketAddr>) {
        let mut changes = Vec::new();
        for m in self.members.values_mut() {
            if m.alive && now >= m.last_seen + PRESENCE_TIMEOUT {
                m.alive = false;
                changes.push(Change::Down { node: m.info.node });
            }
        }
        self.members
            .retain(|_, m| m.alive || now < m.last_seen + FORGET_AFTER);
        self.probes.retain(|_, until| now < *until);
        if now < self.next_send {
            return (changes, Vec::new());
        }
        self.next_send = now + PRESENCE_INTERVAL;
        let mut targets: Vec<SocketAddr> = self.members.values().map(|m| m.addr).collect();
        for addr in self.seeds.iter().chain(self.probes.keys()) {
            if !targets.contains(addr) {
                targets.push(*addr);
            }
        }
        (changes, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(node: u32, session: u64, known: Vec<(u32, SocketAddr)>) -> NodeInfo {
        NodeInfo {
            node,
            session,
            zone: "z".into(),
            role: NodeRole::All,
            http_url: format!("http://n{node}"),
            load: NodeLoad::default(),
            known,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn seeds_are_sent_to_until_they_answer_then_members_are() {
        let t0 = Instant::now();
        let mut p = Presence::new(1, vec![addr(2)], t0);
        assert_eq!(p.on_tick(t0).1, vec![addr(2)]);
        // Not yet time again.
        assert!(p.on_tick(t0 + Duration::from_millis(100)).1.is_empty());
        let up = p.on_message(t0, addr(2), info(2, 7, vec![(3, addr(3))]));
        assert_eq!(
            up,
            Some(Change::Up {
                node: 2,
                addr: addr(2)
            })
        );
        // Gossip taught us node 3's address.
        let (_, targets) = p.on_tick(t0 + PRESENCE_INTERVAL);
        assert_eq!(targets, vec![addr(2), addr(3)]);
    }

    #[test]
    fn a_silent_node_goes_down_and_a_restarted_one_comes_up_again() {
        let t0 = Instant::now();
        let mut p = Presence::new(1, vec![], t0);
        assert!(p.on_message(t0, addr(2), info(2, 7, vec![])).is_some());
        // The same presence again is no change.
        assert_eq!(p.on_message(t0, addr(2), info(2, 7, vec![])), None);
        let (changes, _) = p.on_tick(t0 + PRESENCE_TIMEOUT);
        assert_eq!(changes, vec![Change::Down { node: 2 }]);
        assert!(!p.is_alive(2));
        // Restarted with a new session.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            p.on_message(t1, addr(2), info(2, 8, vec![])),
            Some(Change::Up {
                node: 2,
                addr: addr(2)
            })
        );
        assert!(p.is_alive(2));
        // A restart without a pause is also an Up.
        assert!(p.on_message(t1, addr(2), info(2, 9, vec![])).is_some());
    }

    #[test]
    fn own_presence_is_ignored_and_gossip_probes_expire() {
        let t0 = Instant::now();
        let mut p = Presence::new(1, vec![], t0);
        assert_eq!(p.on_message(t0, addr(1), info(1, 1, vec![])), None);
        assert_eq!(p.members().count(), 0);
        p.on_message(t0, addr(2), info(2, 7, vec![(9, addr(9)), (1, addr(1))]));
        let (_, targets) = p.on_tick(t0);
        assert_eq!(targets, vec![addr(2), addr(9)]);
        let later = t0 + PROBE_FOR;
        p.on_message(later, addr(2), info(2, 7, vec![]));
        let (_, targets) = p.on_tick(later);
        assert_eq!(targets, vec![addr(2)]);
    }
}
