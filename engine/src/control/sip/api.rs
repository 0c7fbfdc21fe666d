//! The SIP service's HTTP side: `/api/sip/calls`,
//! `/api/sip/registrations` and the `corecast_sip_*` metrics.

use std::sync::Arc;

use corecast_media::ConnId;
use serde_json::json;

use super::super::auth::{Access, Action};
use super::super::Control;
use super::SipStats;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::http::{check_auth, refuse, text};
use super::outgoing::{CallAnswer, CallRequest};
use super::SipCommand;

/// Marks a call request one node forwards to another (which never
/// forwards it again).
const FORWARDED: &str = "x-corecast-forwarded";
/// How long a forwarded call request may take.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const OFF: &str = "SIP is off (start with --sip-port)";

/// `GET /api/sip/calls`: the calls now (in and out, any state).
pub(in crate::control) async fn list_calls(State(control): State<Arc<Control>>) -> Response {
    let s = match control.sip.lock() {
        Ok(s) => s.clone(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if !s.on {
        return text(StatusCode::NOT_FOUND, OFF);
    }
    let c = &s.calls;
    axum::Json(json!({
        "calls": s.active,
        "states": {"early": c.early, "accepted": c.accepted, "confirmed": c.confirmed, "terminating": c.terminating},
    }))
    .into_response()
}

/// `GET /api/sip/registrations`: the users registered on this node.
pub(in crate::control) async fn list_registrations(
    State(control): State<Arc<Control>>,
) -> Response {
    match control.sip.lock() {
        Ok(s) if s.on => axum::Json(json!({"registrations": s.registrations})).into_response(),
        Ok(_) => text(StatusCode::NOT_FOUND, OFF),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Asks the SIP service; its answer, or 404 when SIP is off.
async fn ask<T>(
    control: &Control,
    make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, (u16, String)>>) -> SipCommand,
) -> Result<T, (u16, String)> {
    let Some(tx) = control.sip_commands.as_ref() else {
        return Err((404, OFF.to_string()));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(make(reply))
        .await
        .map_err(|_| (503, "the SIP service stopped".to_string()))?;
    answer
        .await
        .map_err(|_| (503, "the SIP service stopped".to_string()))?
}

fn refusal((status, why): (u16, String)) -> Response {
    text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        why,
    )
}

/// `POST /api/sip/calls` `{to, room, peer}`: places a call (201 with the
/// call: its `id`, state `calling`). Needs the right to publish in `room`.
pub(in crate::control) async fn place_call(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request: CallRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let access = Access {
        room: &request.room,
        action: Action::Publish,
        transport: "sip",
    };
    if let Err(r) = check_auth(&control, &headers, &access) {
        return refuse(r);
    }
    let forwarded = headers.contains_key(FORWARDED);
    let answer = ask(&control, |reply| SipCommand::Call {
        request,
        forwarded,
        reply,
    })
    .await;
    match answer {
        Ok(CallAnswer::Placed(info)) => (StatusCode::CREATED, axum::Json(info)).into_response(),
        Ok(CallAnswer::OnNode(node)) => {
            let url = control.view.lock().ok().and_then(|v| {
                v.as_ref()?
                    .members
                    .iter()
                    .find(|m| m.node == node && m.alive)
                    .map(|m| m.http_url.clone())
            });
            let Some(url) = url else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the callee is registered on node {node}, which is not reachable"),
                );
            };
            let auth = headers.get(axum::http::header::AUTHORIZATION).cloned();
            match forward(&url, body, auth).await {
                Ok(response) => {
                    tracing::info!("sip: call request forwarded to node {node} ({url})");
                    response
                }
                Err(e) => text(
                    StatusCode::BAD_GATEWAY,
                    format!("node {node} ({url}), where the callee is registered: {e}"),
                ),
            }
        }
        Err(r) => refusal(r),
    }
}

/// Sends a call request to another node's API and passes its answer on.
async fn forward(
    url: &str,
    body: axum::body::Bytes,
    auth: Option<axum::http::HeaderValue>,
) -> Result<Response, String> {
    let mut headers = vec![(FORWARDED, axum::http::HeaderValue::from_static("1"))];
    if let Some(auth) = auth {
        headers.push(("authorization", auth));
    }
    let url = format!("{}/api/sip/calls", url.trim_end_matches('/'));
    let answer = super::super::hook::post_json(&url, body, &headers, FORWARD_TIMEOUT).await?;
    let mut out = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        out.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

/// `DELETE /api/sip/calls/{id}`: hangs up a call (our BYE, or CANCEL for a
/// call we placed that is not answered). Needs the right to publish in the
/// call's room.
pub(in crate::control) async fn hang_up(
    State(control): State<Arc<Control>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = ConnId::parse(&id).and_then(|conn| {
        let s = control.sip.lock().ok()?;
        s.active
            .iter()
            .find(|c| c.id == id)
            .map(|c| (conn, c.room.clone()))
    });
    let Some((conn, room)) = found else {
        return text(StatusCode::NOT_FOUND, "no such call");
    };
    let access = Access {
        room: &room,
        action: Action::Publish,
        transport: "sip",
    };
    if let Err(r) = check_auth(&control, &headers, &access) {
        return refuse(r);
    }
    match ask(&control, |reply| SipCommand::HangUp { id: conn, reply }).await {
        Ok(()) => {
            tracing::info!("sip {conn}: hung up through the API");
            text(StatusCode::OK, "hanging up")
        }
        Err(r) => refusal(r),
    }
}

/// The `corecast_sip_*` metrics.
pub fn render_metrics(s: &SipStats, out: &mut String) {
    use std::fmt::Write;
    let t = &s.transactions;
    let c = &s.calls;
    let r = &s.registrar;
    let rows: [(&str, &str, &str, u64); 21] = [
        ("corecast_sip_tcp_connections", "gauge", "SIP TCP connections held.", s.tcp_connections as u64),
        ("corecast_sip_tcp_bad_input_total", "counter", "SIP TCP connections closed because a message did not frame (no Content-Length, over 64 KiB, malformed).", s.tcp_bad_input),
        (
            "corecast_sip_calls_placed_total",
            "counter",
            "Calls placed (POST /api/sip/calls).",
            c.outgoing,
        ),
        (
            "corecast_sip_calls_refused_by_callee_total",
            "counter",
            "Calls placed that the callee refused (3xx-6xx).",
            c.ended_refused,
        ),
        (
            "corecast_sip_registrations",
            "gauge",
            "SIP registrations (bindings) held.",
            r.registrations as u64,
        ),
        (
            "corecast_sip_registrations_total",
            "counter",
            "REGISTERs answered 200.",
            r.successes,
        ),
        (
            "corecast_sip_auth_challenges_total",
            "counter",
            "Digest challenges (401) sent.",
            r.challenges,
        ),
        (
            "corecast_sip_auth_failures_total",
            "counter",
            "REGISTERs with wrong credentials or an unknown user (403).",
            r.auth_failures,
        ),
        (
            "corecast_sip_blocked_total",
            "counter",
            "Requests refused 403 because their source failed authentication too often.",
            s.blocked_requests,
        ),
        (
            "corecast_sip_transactions",
            "gauge",
            "SIP transactions held.",
            s.transactions_held as u64,
        ),
        (
            "corecast_sip_transactions_total",
            "counter",
            "SIP transactions started (client and server).",
            t.client_invite + t.client_non_invite + t.server_invite + t.server_non_invite,
        ),
        (
            "corecast_sip_retransmissions_total",
            "counter",
            "SIP messages sent again by the transaction timers.",
            t.retransmissions,
        ),
        (
            "corecast_sip_transaction_timeouts_total",
            "counter",
            "SIP transactions that timed out.",
            t.timeouts,
        ),
        (
            "corecast_sip_refused_total",
            "counter",
            "SIP requests refused before a transaction (table full, RFC 2543 branch).",
            t.refused_full + t.refused_no_cookie,
        ),
        (
            "corecast_sip_parse_errors_total",
            "counter",
            "Datagrams and TCP messages on the SIP port that are not SIP messages within the size limits.",
            s.parse_errors,
        ),
        (
            "corecast_sip_calls_answered_total",
            "counter",
            "Calls answered into a room.",
            s.calls_answered,
        ),
        (
            "corecast_sip_calls_refused_total",
            "counter",
            "INVITEs refused (no such room, not allowed, unusable offer, no RTP port).",
            s.calls_refused,
        ),
        (
            "corecast_sip_no_rtp_port_total",
            "counter",
            "Calls refused because --rtp-ports had no free port.",
            s.no_rtp_port,
        ),
        (
            "corecast_sip_unknown_dialog_total",
            "counter",
            "In-dialog requests for a dialog that does not exist (481).",
            c.unknown_dialog,
        ),
        (
            "corecast_sip_calls_ended_total",
            "counter",
            "Calls ended, any reason.",
            c.ended_remote_bye
                + c.ended_local_bye
                + c.ended_cancelled
                + c.ended_rejected
                + c.ended_no_ack
                + c.ended_unanswered
                + c.ended_transport_error
                + c.ended_refused,
        ),
        (
            "corecast_sip_reinvites_total",
            "counter",
            "re-INVITEs that changed a call's media.",
            c.media_changes,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP corecast_sip_calls SIP calls held, by state.\n# TYPE corecast_sip_calls gauge"
    );
    for (state, n) in [
        ("early", c.early),
        ("accepted", c.accepted),
        ("confirmed", c.confirmed),
        ("terminating", c.terminating),
    ] {
        let _ = writeln!(out, "corecast_sip_calls{{state=\"{state}\"}} {n}");
    }
}
