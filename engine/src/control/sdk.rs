//! The SDK transport's HTTP side (docs/sdk-protocol.md, section 1):
//! `POST /webrtc/connect`, `PATCH` and `DELETE /webrtc/{conn}`. Everything
//! after the connect travels on the connection's data channel (`rpc.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use corecast_cluster::gateway::Intent;
use corecast_cluster::NodeRole;
use corecast_media::{ConnId, TransportKind};
use corecast_webrtc::{Endpoint, PublisherInfo};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Access, Action, Claims, Denied};
use super::http::{admit, check_content, refuse, rtc_error, text, unix_ms, valid_stream, Reject};
use super::rpc::{metadata_fits, MAX_METADATA, PROTOCOL};
use super::Control;

/// The body of `POST /webrtc/connect`.
/// Fields it does not know are ignored (a newer client may send more).
#[derive(Debug, Deserialize)]
struct ConnectRequest {
    room: String,
    peer: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    metadata: Value,
    sdp: String,
    #[serde(default)]
    publish: Vec<PublishEntry>,
    /// Estimate the connection's downlink and give its video slots the
    /// simulcast layers that fit (docs/adaptive-forwarding.md).
    #[serde(default)]
    adaptive: bool,
}

#[derive(Debug, Deserialize)]
struct PublishEntry {
    mid: String,
    name: String,
}

/// Track names: 1-64 characters of `A-Z a-z 0-9 - _ .`.
fn valid_track(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The `Authorization` value to check: the header, else the body's token.
fn authorization(headers: &HeaderMap, token: Option<&str>) -> Option<Vec<u8>> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        return Some(h.as_bytes().to_vec());
    }
    token.map(|t| format!("Bearer {t}").into_bytes())
}

/// Checks the credentials for what the connection will do: publish (it
/// declared tracks) and subscribe (it offers receive slots), as `peer`.
fn check_sdk_auth(
    control: &Control,
    given: Option<&[u8]>,
    room: &str,
    peer: &str,
    publishes: bool,
) -> Result<(), Reject> {
    let now_unix = unix_ms() / 1000;
    let mut actions = vec![Action::Subscribe];
    if publishes {
        actions.push(Action::Publish);
    }
    for action in actions {
        let access = Access {
            room,
            action,
            transport: TransportKind::WebRtc.name(),
        };
        match control.auth.check(given, &access, now_unix) {
            Ok(Some(Claims {
                peer: Some(allowed),
                ..
            })) if allowed != peer => {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("the token is for peer '{allowed}', not '{peer}'"),
                ))
            }
            Ok(_) => {}
            Err(Denied::Unauthorized(why)) => return Err((StatusCode::UNAUTHORIZED, why)),
            Err(Denied::Forbidden(why)) => return Err((StatusCode::FORBIDDEN, why)),
        }
    }
    Ok(())
}

fn is_gateway(control: &Control) -> bool {
    control
        .cluster
        .as_ref()
        .is_some_and(|c| c.role == NodeRole::Gateway)
}

/// A `307 Temporary Redirect` (the client repeats the request, method and
/// body, at `location`).
fn redirect(location: &str) -> Response {
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// On a gateway, a request about connection `conn` goes to the node that
/// holds it (named in the id).
fn gateway_for_conn(control: &Control, conn: &str) -> Option<Response> {
    if !is_gateway(control) {
        return None;
    }
    let Some(url) = ConnId::parse(conn).and_then(|id| super::gateway::node_of(control, id)) else {
        return Some(text(StatusCode::NOT_FOUND, "no such connection"));
    };
    Some(redirect(&format!("{url}/webrtc/{conn}")))
}

/// `POST /webrtc/connect`: a new SDK connection. A gateway checks the
/// request and redirects it to a media node, preferring one that already
/// holds the room.
pub(super) async fn connect(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got '{ct}'"),
        );
    }
    let req: ConnectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed connect request: {e}"),
            )
        }
    };
    if !valid_stream(&req.room) || !valid_stream(&req.peer) {
        return text(
            StatusCode::BAD_REQUEST,
            "room and peer names are 1-128 characters of A-Z a-z 0-9 - _ . ~",
        );
    }
    if let Some(bad) = req.publish.iter().find(|p| !valid_track(&p.name)) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "track name '{}': 1-64 characters of A-Z a-z 0-9 - _ .",
                bad.name
            ),
        );
    }
    if !metadata_fits(&req.metadata) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("metadata is over {MAX_METADATA} bytes"),
        );
    }
    // A send or send-receive transceiver publishes, named or not.
    let publishes =
        !req.publish.is_empty() || req.sdp.contains("a=sendonly") || req.sdp.contains("a=sendrecv");
    let given = authorization(&headers, req.token.as_deref());
    if let Err(r) = check_sdk_auth(&control, given.as_deref(), &req.room, &req.peer, publishes) {
        return refuse(r);
    }
    if is_gateway(&control) {
        let chosen = super::gateway::redirect(
            &control,
            client.ip(),
            Intent::View,
            &req.room,
            "/webrtc/connect",
        );
        return match chosen {
            Some(location) => redirect(&location),
            None => refuse((
                StatusCode::SERVICE_UNAVAILABLE,
                "no media node of the cluster is alive".to_string(),
            )),
        };
    }
    if let Err(r) = admit(&control) {
        return refuse(r);
    }
    let now = Instant::now();
    let conn = match control.directory.lock() {
        Ok(d) => d.next_conn_id(),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    };
    let who = PublisherInfo {
        room: req.room.clone(),
        peer: req.peer.clone(),
    };
    let names = req.publish.into_iter().map(|p| (p.mid, p.name)).collect();
    let peer = Endpoint::peer_with(&control.config, now, &req.sdp, who, names, req.adaptive);
    let (endpoint, answer) = match peer {
        Ok(x) => x,
        Err(e) => return rtc_error(e),
    };
    let Ok(mut d) = control.directory.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned");
    };
    d.add_peer(
        &req.room,
        &req.peer,
        conn,
        Box::new(endpoint),
        req.metadata,
        now,
        unix_ms(),
    );
    tracing::info!("room {}: {} connected ({conn})", req.room, req.peer);
    let mut r = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"conn": conn.to_string(), "sdp": answer, "protocol": PROTOCOL}).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/webrtc/{conn}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The SDK connection named in a path, its room and peer.
fn sdk_conn(control: &Control, conn: &str) -> Option<(ConnId, String, String)> {
    let id = ConnId::parse(conn)?;
    let d = control.directory.lock().ok()?;
    let (room, transport) = d.conn_room(id)?;
    let peer = d.conn_peer(id)?.to_string();
    (transport == TransportKind::WebRtc).then(|| (id, room.to_string(), peer))
}

/// Checks a PATCH's or DELETE's credentials: the room's, and a token with a
/// `peer` claim only for that peer's connection.
fn check_conn_auth(
    control: &Control,
    headers: &HeaderMap,
    room: &str,
    peer: &str,
) -> Result<(), Reject> {
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match control.auth.check(given, &access(room), unix_ms() / 1000) {
        Ok(Some(Claims {
            peer: Some(allowed),
            ..
        })) if allowed != peer => Err((
            StatusCode::FORBIDDEN,
            format!("the token is for peer '{allowed}', not '{peer}'"),
        )),
        Ok(_) => Ok(()),
        Err(Denied::Unauthorized(why)) => Err((StatusCode::UNAUTHORIZED, why)),
        Err(Denied::Forbidden(why)) => Err((StatusCode::FORBIDDEN, why)),
    }
}

fn access(room: &str) -> Access<'_> {
    Access {
        room,
        action: Action::Subscribe,
        transport: TransportKind::WebRtc.name(),
    }
}

/// Credentials are asked for before the connection is looked up: an
/// unknown id and a known one look the same to a caller without them.
fn needs_credentials(control: &Control, headers: &HeaderMap) -> Option<Response> {
    (!control.auth.is_open() && headers.get(header::AUTHORIZATION).is_none()).then(|| {
        refuse((
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer token".to_string(),
        ))
    })
}

/// The SDK connection a `PATCH` or `DELETE` names, once the caller may act
/// on it; else the answer (401 first, a gateway's redirect, 404, 403).
fn authorized_conn(
    control: &Control,
    headers: &HeaderMap,
    conn: &str,
) -> Result<ConnId, Box<Response>> {
    if let Some(r) = needs_credentials(control, headers) {
        return Err(Box::new(r));
    }
    if let Some(r) = gateway_for_conn(control, conn) {
        return Err(Box::new(r));
    }
    let Some((id, room, peer)) = sdk_conn(control, conn) else {
        return Err(Box::new(text(StatusCode::NOT_FOUND, "no such connection")));
    };
    check_conn_auth(control, headers, &room, &peer).map_err(|r| Box::new(refuse(r)))?;
    Ok(id)
}

/// `DELETE /webrtc/{conn}`: ends the connection.
pub(super) async fn delete(
    State(control): State<Arc<Control>>,
    Path(conn): Path<String>,
    headers: HeaderMap,
) -> Response {
    let id = match authorized_conn(&control, &headers, &conn) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if let Ok(mut d) = control.directory.lock() {
        d.remove(Instant::now(), id);
    }
    tracing::info!("connection {id} deleted");
    StatusCode::NO_CONTENT.into_response()
}

/// `PATCH /webrtc/{conn}`: trickle ICE or an ICE restart, as for WHIP.
pub(super) async fn patch(
    State(control): State<Arc<Control>>,
    Path(conn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match authorized_conn(&control, &headers, &conn) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match check_content(&headers, &body, "application/trickle-ice-sdpfrag") {
        Ok(frag) => super::http::signal(&control, id, frag).await,
        Err(r) => refuse(r),
    }
}
