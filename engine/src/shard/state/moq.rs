//! The shard's MoQ port: QUIC datagrams find their connection by the
//! destination connection id (`corecast_moq::quic`): a client's first
//! Initial by the id it chose, every later packet by the shard and key in
//! the ids the connection issued. A client's first Initial makes a
//! connection here (the kernel's `SO_REUSEPORT` hash chose this shard);
//! a packet for another shard's connection (a client whose address
//! changed, hashed elsewhere) crosses to that shard on the ring and is
//! counted (`corecast_moq_misrouted_total`); the connection's shard answers
//! from its own socket, and QUIC validates the new path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use corecast_media::{ConnId, EndpointStats, RouteKey};
use corecast_moq::endpoint::MoqEndpoint;
use corecast_moq::quic::{destination, AcceptRefused, ConnKey, QuicConn, QuicServerConfig};

use super::{Shard, Slot};
use crate::messages::{Datagram, RingMsg};
use crate::metrics::{add, inc};

/// MoQ connections a shard holds before they ask to watch, at most (a
/// flood of handshakes cannot take every slot).
const MAX_UNREQUESTED: usize = 256;

/// What a shard keeps of its MoQ port.
pub(crate) struct MoqPort {
    pub config: QuicServerConfig,
    pub local: SocketAddr,
    next_key: u32,
    /// Connections by the id of the client's first Initial (until they go).
    initial: std::collections::HashMap<Vec<u8>, ConnId>,
    /// MoQ connections of this shard.
    pub conns: HashSet<ConnId>,
    /// Those that asked to watch (the control thread knows them).
    pub requested: HashSet<ConnId>,
}

impl Shard {
    /// Opens the shard's MoQ port (at start, when MoQ is on).
    pub fn set_moq(&mut self, config: QuicServerConfig, local: SocketAddr) {
        self.moq = Some(MoqPort {
            config,
            local,
            next_key: rand::random(),
            initial: Default::default(),
            conns: HashSet::new(),
            requested: HashSet::new(),
        });
    }

    /// Whether the control thread knows `conn` (a MoQ connection only once
    /// it asked to watch).
    pub(super) fn moq_known(&self, conn: ConnId) -> bool {
        self.moq
            .as_ref()
            .is_none_or(|m| !m.conns.contains(&conn) || m.requested.contains(&conn))
    }

    /// Forgets a MoQ connection that went.
    pub(super) fn moq_removed(&mut self, conn: ConnId) {
        let Some(m) = self.moq.as_mut() else {
            return;
        };
        if m.conns.remove(&conn) {
            m.requested.remove(&conn);
            m.initial.retain(|_, c| *c != conn);
            self.metrics
                .moq_connections
                .store(m.conns.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A datagram on the shard's MoQ socket.
    pub fn on_moq_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        inc(&self.metrics.rx_packets_total);
        add(&self.metrics.rx_bytes_total, data.len() as u64);
        let Some(m) = self.moq.as_ref() else {
            return;
        };
        let Some(d) = destination(data) else {
            inc(&self.metrics.moq_bad_datagrams_total);
            return;
        };
        let conn = m.initial.get(d.cid).copied().or_else(|| {
            let key = ConnKey::of_cid(d.cid)?;
            if usize::from(key.shard) != self.id {
                return None;
            }
            self.by_key
                .get(&RouteKey::QuicConnectionId(key.route()))
                .copied()
        });
        if let Some(conn) = conn {
            self.receive_moq(now, conn, source, local, data);
            return;
        }
        if !d.initial {
            let owner = ConnKey::of_cid(d.cid)
                .map(|k| usize::from(k.shard))
                .filter(|s| *s != self.id && *s < self.links.to.len());
            match owner {
                Some(owner) => {
                    let datagram = Datagram {
                        at: now,
                        source,
                        destination: local,
                        contents: data.to_vec(),
                    };
                    if self.push_ring(owner, RingMsg::MoqIngress(datagram)) {
                        inc(&self.metrics.moq_misrouted_total);
                    }
                }
                None => inc(&self.metrics.moq_bad_datagrams_total),
            }
            return;
        }
        self.accept_moq(now, source, local, data);
    }

    /// A datagram another shard read for one of this shard's connections.
    pub(super) fn moq_forwarded(&mut self, now: Instant, d: &Datagram) {
        inc(&self.metrics.cross_shard_ingress_total);
        let conn = destination(&d.contents)
            .and_then(|x| ConnKey::of_cid(x.cid))
            .filter(|k| usize::from(k.shard) == self.id)
            .and_then(|k| {
                self.by_key
                    .get(&RouteKey::QuicConnectionId(k.route()))
                    .copied()
            });
        match conn {
            Some(conn) => self.receive_moq(now, conn, d.source, d.destination, &d.contents),
            None => inc(&self.metrics.moq_bad_datagrams_total),
        }
    }

    fn receive_moq(
        &mut self,
        now: Instant,
        conn: ConnId,
        source: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            return;
        };
        let input = corecast_media::Input::Datagram {
            source,
            destination: local,
            contents: data,
        };
        if slot.endpoint.handle_input(now, input).is_err() {
            inc(&self.metrics.bad_packets_total);
        }
        self.drive(now, conn);
    }

    /// A client's first Initial: a new connection, unless the shard is full.
    fn accept_moq(&mut self, now: Instant, source: SocketAddr, local: SocketAddr, data: &[u8]) {
        let unrequested = self
            .moq
            .as_ref()
            .map_or(0, |m| m.conns.len() - m.requested.len());
        if self.endpoints.len() >= self.stream_settings.max_endpoints
            || unrequested >= MAX_UNREQUESTED
        {
            inc(&self.metrics.moq_refused_total);
            return;
        }
        let Some(m) = self.moq.as_mut() else {
            return;
        };
        m.next_key = m.next_key.wrapping_add(1);
        let key = ConnKey {
            shard: self.id as u8,
            key: m.next_key,
        };
        let quic = match QuicConn::accept(now, &m.config, key, m.local, source, data) {
            Ok(q) => q,
            Err(AcceptRefused::NotInitial(answer)) => {
                // Version negotiation, or nothing.
                if let Some(contents) = answer {
                    self.out.push(corecast_media::Transmit {
                        source: local,
                        destination: source,
                        contents,
                    });
                }
                inc(&self.metrics.moq_bad_datagrams_total);
                return;
            }
            Err(AcceptRefused::Refused(why)) => {
                tracing::debug!("moq from {source}: refused: {why}");
                inc(&self.metrics.moq_refused_total);
                return;
            }
        };
        let conn = ConnId::new(self.stream_settings.node, rand::random());
        let endpoint = MoqEndpoint::new(conn, quic, now);
        let initial = endpoint.initial_cid().to_vec();
        let route = RouteKey::QuicConnectionId(key.route());
        m.initial.insert(initial, conn);
        m.conns.insert(conn);
        self.metrics
            .moq_connections
            .store(m.conns.len() as u64, std::sync::atomic::Ordering::Relaxed);
        inc(&self.metrics.moq_connections_total);
        self.by_key.insert(route.clone(), conn);
        self.endpoints.insert(
            conn,
            Slot {
                endpoint: Box::new(endpoint),
                next_timeout: now,
                addrs: Vec::new(),
                key: Some(route),
                subscriptions: Vec::new(),
                queued: false,
                reported: EndpointStats::default(),
            },
        );
        self.drive(now, conn);
    }
}
