//! Publishers that ask in band (RTMP's `publish`): the shard that accepted
//! the connection passes the request here; the control thread checks the
//! stream name and the credentials as it does for WHIP, lists the
//! publisher in its room and answers the shard.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use corecast_cluster::NodeRole;
use corecast_media::{ConnId, Refusal, TransportKind};

use super::auth::{Access, Action, Denied};
use super::http::{unix_ms, valid_stream};
use super::Control;
use crate::messages::ShardCommand;

/// Answers a publish request of connection `conn` on `shard`.
pub(super) fn on_publish_request(
    control: &Control,
    now: Instant,
    conn: ConnId,
    shard: usize,
    transport: TransportKind,
    room: &str,
    token: Option<&str>,
) {
    let checked = check(control, transport, room, token);
    // For the log: a refused name may be long.
    let shown: String = room.chars().take(128).collect();
    let Ok(mut d) = control.directory.lock() else {
        return;
    };
    let answer = match checked {
        Ok(()) => {
            let (audio, video) = match transport {
                TransportKind::Rtmp => (
                    vec![corecast_rtmp::endpoint::opus_info()],
                    corecast_rtmp::endpoint::video_codecs(),
                ),
                TransportKind::Moq => (
                    vec![corecast_rtmp::endpoint::opus_info()],
                    corecast_moq::endpoint::publish_video_codecs(),
                ),
                _ => (Vec::new(), Vec::new()),
            };
            let peer =
                d.add_stream_publisher(room, conn, shard, transport, audio, video, now, unix_ms());
            tracing::info!("{} {shown}: publisher {conn}", transport.name());
            Ok(peer)
        }
        Err(r) => {
            tracing::info!(
                "{} {shown}: publish of {conn} refused: {}",
                transport.name(),
                r.message()
            );
            d.count_publish_refused(transport, r.label());
            Err(r)
        }
    };
    d.command(shard, ShardCommand::Admit { conn, answer });
}

/// Answers a watch request (a MoQ subscription to a room's broadcast) of
/// connection `conn` on `shard`: a viewer of the room's stream, like a
/// WHEP viewer, once the name and the credentials pass.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_watch_request(
    control: &Control,
    now: Instant,
    conn: ConnId,
    shard: usize,
    transport: TransportKind,
    room: &str,
    token: Option<&str>,
    slots: Vec<corecast_media::Slot>,
) {
    let checked = check_action(control, transport, room, token, Action::Subscribe);
    let shown: String = room.chars().take(128).collect();
    let Ok(mut d) = control.directory.lock() else {
        return;
    };
    let answer = match checked {
        Ok(()) => {
            d.add_stream_viewer(room, conn, shard, transport, slots, now);
            tracing::info!("{} {shown}: viewer {conn}", transport.name());
            Ok(conn.to_string())
        }
        Err(r) => {
            tracing::info!(
                "{} {shown}: watch of {conn} refused: {}",
                transport.name(),
                r.message()
            );
            Err(r)
        }
    };
    d.command(shard, ShardCommand::Admit { conn, answer });
}

fn check(
    control: &Control,
    transport: TransportKind,
    room: &str,
    token: Option<&str>,
) -> Result<(), Refusal> {
    check_action(control, transport, room, token, Action::Publish)
}

fn check_action(
    control: &Control,
    transport: TransportKind,
    room: &str,
    token: Option<&str>,
    action: Action,
) -> Result<(), Refusal> {
    if !valid_stream(room) {
        return Err(Refusal::BadName(
            "stream names are 1-128 characters of A-Z a-z 0-9 - _ . ~".to_string(),
        ));
    }
    if control
        .cluster
        .as_ref()
        .is_some_and(|c| c.role == NodeRole::Gateway)
    {
        return Err(Refusal::Unavailable(
            "this node is a gateway: connect to a media node".to_string(),
        ));
    }
    let bearer = token.map(|t| format!("Bearer {t}"));
    let access = Access {
        room,
        action,
        transport: transport.name(),
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match control
        .auth
        .check(bearer.as_deref().map(str::as_bytes), &access, now_unix)
    {
        Ok(_) => Ok(()),
        Err(Denied::Unauthorized(why)) | Err(Denied::Forbidden(why)) => Err(Refusal::Denied(why)),
    }
}
