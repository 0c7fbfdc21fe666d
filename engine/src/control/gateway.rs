//! A gateway's answer to WHIP and WHEP: a redirect to the chosen media node.

use std::net::IpAddr;

use corecast_cluster::gateway::{route, Candidate, Intent};
use corecast_cluster::ClusterView;

use super::Control;

/// The live media nodes of a cluster view, this node included when it
/// serves media.
pub fn candidates(view: &ClusterView) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = view
        .members
        .iter()
        .filter(|m| m.alive && m.role.serves_media())
        .map(|m| Candidate {
            node: m.node,
            zone: m.zone.clone(),
            url: m.http_url.clone(),
            shards: m.load.shards,
            endpoints: m.load.endpoints,
            cpu_percent: m.load.cpu_percent,
            max_endpoints_per_shard: m.load.max_endpoints_per_shard,
            streams: m.load.streams.clone(),
        })
        .collect();
    if view.role.serves_media() {
        out.push(Candidate {
            node: view.node,
            zone: view.zone.clone(),
            url: view.http_url.clone(),
            shards: view.load.shards,
            endpoints: view.load.endpoints,
            cpu_percent: view.load.cpu_percent,
            max_endpoints_per_shard: view.load.max_endpoints_per_shard,
            streams: view.load.streams.clone(),
        });
    }
    out
}

/// The base URL of the node that made connection `conn` (its id's top 16
/// bits are the low 16 bits of the node id), when it is alive.
pub fn node_of(control: &Control, conn: corecast_media::ConnId) -> Option<String> {
    let view = control.view.lock().ok()?.clone()?;
    let node = conn.node();
    view.members
        .iter()
        .find(|m| m.alive && m.node as u16 == node)
        .map(|m| m.http_url.trim_end_matches('/').to_string())
}

/// Where a gateway sends a client: the full URL of `path` on the chosen
/// media node, or None when no media node is alive.
pub fn redirect(
    control: &Control,
    client: IpAddr,
    intent: Intent,
    stream: &str,
    path: &str,
) -> Option<String> {
    let cluster = control.cluster.as_ref()?;
    let view = control.view.lock().ok()?.clone()?;
    let candidates = candidates(&view);
    let chosen = route(
        &control.zones,
        &cluster.zone,
        client,
        &candidates,
        intent,
        stream,
    )?;
    tracing::info!(
        "gateway: {path} from {client} → node {} in zone {}{}",
        chosen.node.node,
        chosen.zone,
        if chosen.fell_back { " (fallback)" } else { "" }
    );
    Some(format!("{}{path}", chosen.node.url.trim_end_matches('/')))
}
