//! Start-up and shutdown of a node: sockets, shards, mesh, control plane.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use corecast_webrtc::EndpointConfig;

use crate::config::Settings;
use crate::control::{self, ControlHandle};
use crate::mesh;
use crate::metrics::ShardMetrics;
use crate::shard::{spawn_shard, ShardSetup};
use crate::socket::bind_media_socket;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("cannot bind media port {addr}: {source}")]
    Media {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind HTTP {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {source}")]
    Shard {
        shard: usize,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    pub http_addr: SocketAddr,
    pub media_addrs: Vec<SocketAddr>,
    control: ControlHandle,
    shards: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Node {
    pub fn start(settings: &Settings) -> Result<Node, NodeError> {
        // Bind shard 0 first (it may pick the port), then the rest on the same port.
        let mut port = settings.media_port;
        let mut sockets: Vec<Vec<std::net::UdpSocket>> = Vec::new();
        let mut media_addrs = Vec::new();
        for shard in 0..settings.shards {
            let mut mine = Vec::new();
            for ip in &settings.ice_ips {
                let addr = SocketAddr::new(*ip, port);
                let socket = bind_media_socket(addr, settings.socket_buffer)
                    .map_err(|source| NodeError::Media { addr, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| NodeError::Media { addr, source })?;
                port = local.port();
                if shard == 0 {
                    media_addrs.push(local);
                }
                mine.push(socket);
            }
            sockets.push(mine);
        }
        let mut config = EndpointConfig::new(media_addrs.clone());
        config.consent_timeout = settings.consent_timeout;

        let metrics: Vec<Arc<ShardMetrics>> =
            (0..settings.shards).map(|_| Arc::default()).collect();
        let (control_tx, control_rx) = flume::bounded(4096);
        let mut command_txs = Vec::new();
        let mut shards = Vec::new();
        for (id, (links, sockets)) in mesh::wire(settings.shards)
            .into_iter()
            .zip(sockets)
            .enumerate()
        {
            let (tx, rx) = flume::bounded(1024);
            command_txs.push(tx);
            let setup = ShardSetup {
                id,
                core: settings.pin.then_some(settings.first_core + id),
                sockets,
                links,
                commands: rx,
                control: control_tx.clone(),
                metrics: metrics[id].clone(),
            };
            shards
                .push(spawn_shard(setup).map_err(|source| NodeError::Shard { shard: id, source })?);
        }
        let control = control::start(settings, config, command_txs, control_rx, metrics)?;
        Ok(Node {
            http_addr: control.http_addr,
            media_addrs,
            control,
            shards,
        })
    }

    /// Blocks until the node stops.
    pub fn wait(self) {
        self.control.join();
        for s in self.shards {
            let _ = s.join();
        }
    }

    /// Stops the control plane and the shards.
    pub fn shutdown(self) {
        self.control.stop();
        for s in self.shards {
            let _ = s.join();
        }
    }
}

/// The IPs a node advertises, for logs.
pub fn describe(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
