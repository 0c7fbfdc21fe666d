//! HTTP routes: WHIP, WHEP, their session resources, health and metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corecast_cluster::gateway::Intent;
use corecast_cluster::{ClusterView, NodeRole};
use corecast_media::ConnId;
use corecast_webrtc::{parse_sdpfrag, Endpoint, Error as RtcError, PublisherInfo, ViewerOptions};
use tower_http::cors::{Any, CorsLayer};

use super::auth::{Access, Action, Denied};
use super::directory::{Refusal, SignalTarget};
use super::Control;
use crate::messages::ShardCommand;
use crate::metrics::ShardMetrics;

/// Largest SDP or sdpfrag body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;
/// How long a PATCH waits for the session's shard.
const FRAGMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Seconds a client refused with 503 is told to wait.
const RETRY_AFTER_S: &str = "2";

pub fn router(control: Arc<Control>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK]);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/certificate.sha256", get(moq_fingerprint))
        .route("/api/streams", get(streams))
        .route("/api/cluster", get(cluster))
        .route("/api/closed", get(closed))
        .route("/api/rooms", get(rooms))
        .route(
            "/api/sip/calls",
            get(super::sip::list_calls).post(super::sip::place_call),
        )
        .route(
            "/api/sip/calls/{id}",
            axum::routing::delete(super::sip::hang_up),
        )
        .route(
            "/api/sip/registrations",
            get(super::sip::list_registrations),
        )
        .route(
            "/webrtc/connect",
            post(super::sdk::connect).options(options),
        )
        .route(
            "/webrtc/{conn}",
            axum::routing::delete(super::sdk::delete)
                .patch(super::sdk::patch)
                .options(options),
        )
        .route("/whip/{stream}", post(whip).options(options))
        .route("/whep/{stream}", post(whep).options(options))
        .route(
            "/whip/{stream}/{session}",
            axum::routing::delete(delete).patch(patch).options(options),
        )
        .route(
            "/whep/{stream}/{session}",
            axum::routing::delete(delete).patch(patch).options(options),
        )
        .merge(super::pages::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .with_state(control)
}

pub(super) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r.headers_mut().insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    r
}

/// A refused request: status and reason.
pub(super) type Reject = (StatusCode, String);

/// A refusal; a 503 says when to retry.
pub(super) fn refuse(r: Reject) -> Response {
    let unavailable = r.0 == StatusCode::SERVICE_UNAVAILABLE;
    let mut response = text(r.0, r.1);
    if unavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
    }
    response
}

/// Compares two byte strings in time that depends on their lengths only,
/// not on where they differ (the bearer token).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// Checks the credentials and the content type; returns the body as text.
pub(super) fn check_request(
    control: &Control,
    headers: &HeaderMap,
    access: &Access<'_>,
    body: &Bytes,
    content_type: &str,
) -> Result<String, Reject> {
    check_auth(control, headers, access)?;
    check_content(headers, body, content_type)
}

/// Checks the content type; returns the body as text.
pub(super) fn check_content(
    headers: &HeaderMap,
    body: &Bytes,
    content_type: &str,
) -> Result<String, Reject> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(content_type) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {content_type}, got '{ct}'"),
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| (StatusCode::BAD_REQUEST, "body is not UTF-8".to_string()))
}

/// Checks the request's credentials for `access` (see [`super::auth`]).
pub(super) fn check_auth(
    control: &Control,
    headers: &HeaderMap,
    access: &Access<'_>,
) -> Result<(), Reject> {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match control.auth.check(given, access, now_unix) {
        Ok(_) => Ok(()),
        Err(Denied::Unauthorized(why)) => Err((StatusCode::UNAUTHORIZED, why)),
        Err(Denied::Forbidden(why)) => Err((StatusCode::FORBIDDEN, why)),
    }
}

/// A WHIP request publishes into its room.
fn whip_access(room: &str) -> Access<'_> {
    Access {
        room,
        action: Action::Publish,
        transport: "whip",
    }
}

/// A WHEP request subscribes to its room.
fn whep_access(room: &str) -> Access<'_> {
    Access {
        room,
        action: Action::Subscribe,
        transport: "whep",
    }
}

/// What a request on a session resource (`/whip/{room}/{session}` or
/// `/whep/…`) does, by its path.
fn session_access<'a>(path: &str, room: &'a str) -> Access<'a> {
    if path.starts_with("/whep/") {
        whep_access(room)
    } else {
        whip_access(room)
    }
}

pub(super) fn valid_stream(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// Admission: the kernel, not the control thread, picks a session's shard,
/// so capacity is node-wide: connected endpoints (as the shards count them)
/// plus pending ones (each a full WebRTC state held until claimed or the
/// consent timeout) below `shards × --max-endpoints-per-shard`, and pending
/// ones below `--max-pending`.
pub(super) fn admit(control: &Control) -> Result<(), Reject> {
    let placed: u64 = control
        .metrics
        .iter()
        .map(|m| m.endpoints.load(Ordering::Relaxed))
        .sum();
    let capacity =
        (control.metrics.len() as u64).saturating_mul(control.max_endpoints_per_shard as u64);
    let Ok(mut d) = control.directory.lock() else {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "control state poisoned".to_string(),
        ));
    };
    match d.admit(placed, capacity, control.max_pending) {
        Ok(()) => Ok(()),
        Err(Refusal::Pending) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} sessions are waiting to connect (--max-pending); retry shortly",
                control.max_pending
            ),
        )),
        Err(Refusal::Capacity) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is at its endpoint limit (shards × --max-endpoints-per-shard)".to_string(),
        )),
    }
}

fn created(location: String, answer: String) -> Response {
    let mut r = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        answer,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(super) fn rtc_error(e: RtcError) -> Response {
    match e {
        RtcError::NoCommonCodec { .. } => text(StatusCode::NOT_ACCEPTABLE, e.to_string()),
        _ => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// What WHIP and WHEP check before looking at the offer itself.
fn check_offer(
    control: &Control,
    access: &Access<'_>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, Reject> {
    let stream = access.room;
    let offer = check_request(control, headers, access, body, "application/sdp")?;
    if !valid_stream(stream) {
        return Err((
            StatusCode::BAD_REQUEST,
            "stream names are 1-128 characters of A-Z a-z 0-9 - _ . ~".to_string(),
        ));
    }
    admit(control)?;
    Ok(offer)
}

/// A gateway answers WHIP and WHEP with a redirect to a media node; the
/// query (a WHEP viewer's `max_layer`, `adaptive`) goes along.
fn gateway_redirect(
    control: &Control,
    client: SocketAddr,
    intent: Intent,
    stream: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response> {
    let role = control.cluster.as_ref()?.role;
    if role != NodeRole::Gateway {
        return None;
    }
    let access = match intent {
        Intent::Publish => whip_access(stream),
        Intent::View => whep_access(stream),
    };
    if let Err(r) = check_auth(control, headers, &access) {
        return Some(refuse(r));
    }
    if !valid_stream(stream) {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "stream names are 1-128 characters of A-Z a-z 0-9 - _ . ~",
        ));
    }
    let mut path = match intent {
        Intent::Publish => format!("/whip/{stream}"),
        Intent::View => format!("/whep/{stream}"),
    };
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        path = format!("{path}?{q}");
    }
    let Some(location) = super::gateway::redirect(control, client.ip(), intent, stream, &path)
    else {
        return Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no media node of the cluster is alive",
        ));
    };
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Some(r)
}

async fn whip(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = gateway_redirect(&control, client, Intent::Publish, &stream, None, &headers) {
        return r;
    }
    let offer = match check_offer(&control, &whip_access(&stream), &headers, &body) {
        Ok(o) => o,
        Err(r) => return refuse(r),
    };
    let now = Instant::now();
    let session = match control.directory.lock() {
        Ok(d) => d.next_conn_id(),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    };
    let who = PublisherInfo {
        room: stream.clone(),
        peer: session.to_string(),
    };
    let (endpoint, answer) = match Endpoint::publisher(&control.config, now, &offer, who) {
        Ok(x) => x,
        Err(e) => return rtc_error(e),
    };
    let Ok(mut d) = control.directory.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned");
    };
    d.add_publisher(&stream, session, Box::new(endpoint), now, unix_ms());
    tracing::info!("whip {stream}: publisher {session}");
    created(format!("/whip/{stream}/{session}"), answer)
}

async fn whep(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query();
    if let Some(r) = gateway_redirect(&control, client, Intent::View, &stream, query, &headers) {
        return r;
    }
    let offer = match check_offer(&control, &whep_access(&stream), &headers, &body) {
        Ok(o) => o,
        Err(r) => return refuse(r),
    };
    let (required, layers) = match control.directory.lock() {
        Ok(d) => (d.required_codecs(&stream), d.stream_layers(&stream)),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    };
    let options = match viewer_options(uri.query(), layers) {
        Ok(o) => o,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let now = Instant::now();
    let viewer = Endpoint::viewer_with(&control.config, now, &offer, &required, options);
    let (endpoint, answer) = match viewer {
        Ok(x) => x,
        Err(e) => return rtc_error(e),
    };
    let Ok(mut d) = control.directory.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned");
    };
    let session = d.add_viewer(&stream, Box::new(endpoint), now);
    tracing::info!("whep {stream}: viewer {session}");
    created(format!("/whep/{stream}/{session}"), answer)
}

/// A WHEP viewer's options from its query (docs/adaptive-forwarding.md):
/// `max_layer=N` caps the spatial layer (0 = lowest), `adaptive=0|1`
/// turns the bandwidth estimate off or on. Adaptive by default when the
/// stream's publisher sends simulcast (`layers` > 1).
fn viewer_options(query: Option<&str>, layers: u8) -> Result<ViewerOptions, String> {
    let mut options = ViewerOptions {
        adaptive: layers > 1,
        max_spatial: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "max_layer" => {
                let layer = value
                    .parse::<u8>()
                    .ok()
                    .filter(|l| usize::from(*l) < corecast_media::MAX_SPATIAL)
                    .ok_or_else(|| {
                        format!(
                            "max_layer must be a spatial layer from 0 to {}",
                            corecast_media::MAX_SPATIAL - 1
                        )
                    })?;
                options.max_spatial = Some(layer);
            }
            "adaptive" => {
                options.adaptive = match value {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err("adaptive must be 0 or 1".into()),
                }
            }
            // Other parameters (a token, a cache buster) are not ours.
            _ => {}
        }
    }
    Ok(options)
}

/// Unix time in milliseconds (when a connection was made: of two
/// connections of one peer id, the later stays).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lookup(control: &Control, stream: &str, session: &str) -> Option<ConnId> {
    let id = ConnId::parse(session)?;
    let d = control.directory.lock().ok()?;
    let (s, _) = d.conn_room(id)?;
    (s == stream).then_some(id)
}

async fn delete(
    State(control): State<Arc<Control>>,
    Path((stream, session)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_auth(&control, &headers, &session_access(uri.path(), &stream)) {
        return refuse(r);
    }
    let Some(id) = lookup(&control, &stream, &session) else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    if let Ok(mut d) = control.directory.lock() {
        d.remove(Instant::now(), id);
    }
    tracing::info!("session {id} deleted");
    text(StatusCode::OK, "session ended")
}

async fn patch(
    State(control): State<Arc<Control>>,
    Path((stream, session)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let access = session_access(uri.path(), &stream);
    let frag = match check_request(
        &control,
        &headers,
        &access,
        &body,
        "application/trickle-ice-sdpfrag",
    ) {
        Ok(f) => f,
        Err(r) => return refuse(r),
    };
    if let Err(e) = parse_sdpfrag(&frag) {
        return text(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(id) = lookup(&control, &stream, &session) else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    signal(&control, id, frag).await
}

/// Applies a PATCH body to a connection's endpoint, pending here or on its
/// shard, and answers with what the endpoint says.
pub(super) async fn signal(control: &Control, id: ConnId, body: String) -> Response {
    let result = {
        let Ok(mut d) = control.directory.lock() else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned");
        };
        match d.signal_target(id) {
            None => return text(StatusCode::NOT_FOUND, "no such session"),
            Some(SignalTarget::Pending(endpoint)) => {
                let r = endpoint.signal(Instant::now(), &body);
                let ufrag = match endpoint.route_key() {
                    Some(corecast_media::RouteKey::IceUfrag(u)) => Some(u),
                    _ => None,
                };
                if let Some(ufrag) = ufrag {
                    d.set_ufrag(id, ufrag);
                }
                Ok(r)
            }
            Some(SignalTarget::Shard(shard)) => {
                // Through the Directory's outbox: after the Adopt of this
                // connection, never dropped on a full queue.
                let (reply, rx) = tokio::sync::oneshot::channel();
                d.command(
                    shard,
                    ShardCommand::Signal {
                        conn: id,
                        body,
                        reply,
                    },
                );
                Err(rx)
            }
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(rx) => match tokio::time::timeout(FRAGMENT_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return text(StatusCode::NOT_FOUND, "session ended"),
            Err(_) => {
                return refuse((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session's shard did not answer in time".to_string(),
                ))
            }
        },
    };
    match result {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(answer)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
            answer,
        )
            .into_response(),
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

async fn metrics(State(control): State<Arc<Control>>) -> Response {
    let mut out = String::with_capacity(4096);
    ShardMetrics::render(&control.metrics, &mut out);
    let pending = match control.directory.lock() {
        Ok(d) => {
            d.render_metrics(&mut out, &control.metrics);
            d.pending()
        }
        Err(_) => 0,
    };
    out.push_str(
        "# HELP corecast_pending_endpoints Endpoints answered but not yet claimed by a shard.\n",
    );
    out.push_str("# TYPE corecast_pending_endpoints gauge\n");
    out.push_str(&format!("corecast_pending_endpoints {pending}\n"));
    if let Some(view) = control.view.lock().ok().and_then(|v| v.clone()) {
        render_cluster(&view, &mut out);
    }
    if let Some(sip) = control.sip.lock().ok().filter(|s| s.on).map(|s| s.clone()) {
        super::sip::render_metrics(&sip, &mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn render_cluster(view: &ClusterView, out: &mut String) {
    let s = view.stats;
    let alive = view.members.iter().filter(|m| m.alive).count();
    for (name, kind, help, value) in [
        (
            "corecast_cluster_nodes_alive",
            "gauge",
            "Other cluster nodes heard from within the presence timeout.",
            alive as u64,
        ),
        (
            "corecast_cluster_rx_packets_total",
            "counter",
            "Datagrams received on the cluster port.",
            s.rx_packets,
        ),
        (
            "corecast_cluster_tx_packets_total",
            "counter",
            "Datagrams sent from the cluster port.",
            s.tx_packets,
        ),
        (
            "corecast_cluster_rejected_garbage_total",
            "counter",
            "Datagrams at the cluster port that are not cluster frames.",
            s.rejected_garbage,
        ),
        (
            "corecast_cluster_rejected_secret_total",
            "counter",
            "Cluster frames sealed with another secret (or tampered with).",
            s.rejected_secret,
        ),
        (
            "corecast_cluster_media_in_total",
            "counter",
            "Media packets received from other nodes.",
            s.media_in,
        ),
        (
            "corecast_cluster_media_out_total",
            "counter",
            "Media packets published to other nodes.",
            s.media_out,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
}

/// `GET /api/cluster`: this node, the nodes it knows, its channels' relay
/// state, and (on a gateway) the candidates it chooses from.
async fn cluster(State(control): State<Arc<Control>>) -> Response {
    let Some(settings) = control.cluster.as_ref() else {
        return text(StatusCode::NOT_FOUND, "this node is not part of a cluster");
    };
    let view = control.view.lock().ok().and_then(|v| v.clone());
    let candidates = view
        .as_ref()
        .map(super::gateway::candidates)
        .unwrap_or_default();
    Json(serde_json::json!({
        "node": settings.node_id,
        "zone": settings.zone,
        "role": settings.role,
        "view": view,
        "candidates": candidates,
        "zones": control.zones.zones(),
    }))
    .into_response()
}

/// `GET /api/rooms`: every room this node knows, with its peers (here and
/// on other nodes), their tracks and connections.
async fn rooms(State(control): State<Arc<Control>>) -> Response {
    match control.directory.lock() {
        Ok(d) => Json(d.rooms_json()).into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    }
}

async fn streams(State(control): State<Arc<Control>>) -> Response {
    match control.directory.lock() {
        Ok(d) => Json(d.streams()).into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    }
}

/// `GET /api/closed`: sessions that ended lately (newest first, at most
/// 128), with why: `deleted`, `replaced`, `codec_changed`, `consent_expired`,
/// `peer_closed`, `closed`, `never_connected`, `not_adopted`.
async fn closed(State(control): State<Arc<Control>>) -> Response {
    let now = Instant::now();
    match control.directory.lock() {
        Ok(d) => Json(
            d.recently_closed()
                .map(|c| {
                    serde_json::json!({
                        "session": c.conn.to_string(),
                        "stream": c.room,
                        "role": match c.transport {
                            corecast_media::TransportKind::Whip => "publisher",
                            corecast_media::TransportKind::Whep => "viewer",
                            other => other.name(),
                        },
                        "reason": c.reason,
                        "seconds_ago": now.saturating_duration_since(c.at).as_secs(),
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "control state poisoned"),
    }
}

/// The SHA-256 of the MoQ port's certificate, 64 hex digits and nothing
/// else (MoQ players pin it: `http://HOST:PORT/` in @moq/watch fetches this
/// path); 404 when MoQ is off.
async fn moq_fingerprint(State(control): State<Arc<Control>>) -> Response {
    match &control.moq_fingerprint {
        Some(f) => ([(header::CONTENT_TYPE, "text/plain")], f.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "MoQ is off (--moq-port)\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, viewer_options};

    #[test]
    fn token_compare_is_exact() {
        assert!(constant_time_eq(b"Bearer s3cret", b"Bearer s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"Bearer s3cret", b"Bearer s3creT"));
        assert!(!constant_time_eq(b"Bearer s3cret", b"bearer s3cret"));
        assert!(!constant_time_eq(b"Bearer s3cret", b"Bearer s3cre"));
        assert!(!constant_time_eq(b"Bearer s3cret", b"Bearer s3cret "));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn whep_query_sets_the_viewer_options() {
        let o = viewer_options(None, 3).unwrap();
        assert!(o.adaptive, "a simulcast stream gets an adaptive leg");
        assert_eq!(o.max_spatial, None);
        assert!(!viewer_options(None, 1).unwrap().adaptive);
        let o = viewer_options(Some("max_layer=1&token=x"), 3).unwrap();
        assert_eq!(o.max_spatial, Some(1));
        assert!(!viewer_options(Some("adaptive=0"), 3).unwrap().adaptive);
        assert!(viewer_options(Some("adaptive=1"), 1).unwrap().adaptive);
        for bad in ["max_layer=4", "max_layer=", "max_layer=-1", "adaptive=yes"] {
            assert!(viewer_options(Some(bad), 3).is_err(), "{bad}");
        }
    }
}
