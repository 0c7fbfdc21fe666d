//! The generator's Janus target: publishers and viewers through the
//! VideoRoom plugin of a Janus gateway, over Janus's HTTP API, so that the
//! same load can be put on another SFU in the same run (`--janus URL`).
//!
//! Each stream is a VideoRoom room (its id derived from the stream name)
//! with one publisher, whose feed id is [`FEED`]. A publisher creates the
//! room, then joins and configures with its offer; a viewer joins as a
//! subscriber of the feed, answers the offer Janus makes and starts. Every
//! peer has its own Janus session, destroyed when the run ends. Janus must
//! not expire idle sessions (`session_timeout = 0`): nobody long-polls a
//! session once it is set up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::url::{request, request_within, HttpUrl};

/// The publisher's feed id in its room.
pub const FEED: u64 = 1;

/// How long one set-up waits for Janus's asynchronous answer.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// A subscriber's plugin handle: where its `start` goes.
#[derive(Debug, Clone)]
pub struct Handle {
    /// `…/janus/{session}`: long-polled for events, destroyed at the end.
    pub session: HttpUrl,
    /// `…/janus/{session}/{handle}`.
    pub handle: HttpUrl,
}

/// The room of a stream: an id from its name (FNV-1a), below 2^53 so that
/// any JSON reader keeps it exact, and never 0.
pub fn room_of(stream: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & ((1 << 53) - 1)).max(1)
}

fn transaction() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("cc{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// POSTs one Janus request to `url`; returns Janus's JSON reply.
fn post(url: &HttpUrl, mut body: Value) -> Result<Value, String> {
    body["transaction"] = json!(transaction());
    let r = request(
        url,
        "POST",
        Some("application/json"),
        None,
        body.to_string().as_bytes(),
    )
    .map_err(|e| format!("janus {}: {e}", url.path))?;
    if r.status != 200 {
        return Err(format!(
            "janus {}: HTTP {} {}",
            url.path,
            r.status,
            r.body.trim()
        ));
    }
    let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("janus reply: {e}"))?;
    if v["janus"] == "error" {
        return Err(format!("janus: {}", v["error"]));
    }
    Ok(v)
}

/// Creates a session and attaches the VideoRoom plugin to it.
fn attach(base: &HttpUrl) -> Result<Handle, String> {
    let created = post(base, json!({"janus": "create"}))?;
    let session_id = created["data"]["id"]
        .as_u64()
        .ok_or("janus create: no session id")?;
    let session = base.join(&format!("{}/{session_id}", base.path.trim_end_matches('/')));
    let attached = post(
        &session,
        json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
    )?;
    let handle_id = attached["data"]["id"]
        .as_u64()
        .ok_or("janus attach: no handle id")?;
    let handle = session.join(&format!("{}/{handle_id}", session.path));
    Ok(Handle { session, handle })
}

/// Sends an asynchronous plugin request and waits for the plugin's event
/// that answers it (the event, with its `jsep` when there is one).
fn message(h: &Handle, body: Value, jsep: Option<Value>) -> Result<Value, String> {
    let id = transaction();
    let mut req = json!({"janus": "message", "transaction": id, "body": body});
    if let Some(j) = jsep {
        req["jsep"] = j;
    }
    let r = request(
        &h.handle,
        "POST",
        Some("application/json"),
        None,
        req.to_string().as_bytes(),
    )
    .map_err(|e| format!("janus message: {e}"))?;
    let ack: Value = serde_json::from_str(&r.body).map_err(|e| format!("janus reply: {e}"))?;
    match ack["janus"].as_str() {
        Some("ack") => {}
        Some("success") => return plugin_data(ack),
        _ => return Err(format!("janus message: {}", r.body.trim())),
    }
    let end = Instant::now() + EVENT_WAIT;
    let poll = h.session.join(&format!("{}?maxev=1", h.session.path));
    while Instant::now() < end {
        let r = request_within(&poll, "GET", None, None, b"", EVENT_WAIT)
            .map_err(|e| format!("janus long poll: {e}"))?;
        let event: Value =
            serde_json::from_str(&r.body).map_err(|e| format!("janus event: {e}"))?;
        if event["janus"] == "event" && event["transaction"] == id.as_str() {
            return plugin_data(event);
        }
        // Anything else (keepalive, webrtcup, media, …) is not the answer.
    }
    Err("janus: no answer to a request within 30 s".into())
}

/// The plugin's part of a reply, failing on the plugin's errors; the reply's
/// `jsep` is kept under the key `jsep`.
fn plugin_data(reply: Value) -> Result<Value, String> {
    let mut data = reply["plugindata"]["data"].clone();
    if let Some(code) = data["error_code"].as_u64() {
        return Err(format!("janus videoroom error {code}: {}", data["error"]));
    }
    if !reply["jsep"].is_null() {
        data["jsep"] = reply["jsep"].clone();
    }
    Ok(data)
}

/// Janus's error code for "room already exists".
const ROOM_EXISTS: u64 = 427;

/// Publishes `offer` to the stream's room (created when missing). Returns
/// Janus's answer and the session to destroy at the end.
pub fn publish(base: &HttpUrl, stream: &str, offer: &str) -> Result<(String, HttpUrl), String> {
    let h = attach(base)?;
    let room = room_of(stream);
    let created = post(
        &h.handle,
        json!({"janus": "message", "body": {
            "request": "create", "room": room, "description": stream,
            "publishers": 1, "bitrate": 0, "fir_freq": 0,
            "audiocodec": "opus", "videocodec": "vp8", "notify_joining": false,
        }}),
    )?;
    let data = &created["plugindata"]["data"];
    match data["error_code"].as_u64() {
        None | Some(ROOM_EXISTS) => {}
        Some(code) => {
            return Err(format!(
                "janus create room {room}: {code} {}",
                data["error"]
            ))
        }
    }
    let joined = message(
        &h,
        json!({"request": "joinandconfigure", "ptype": "publisher", "room": room, "id": FEED,
               "audio": true, "video": true}),
        Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
    )?;
    let answer = joined["jsep"]["sdp"]
        .as_str()
        .ok_or("janus publish: no answer in its reply")?;
    Ok((answer.to_string(), h.session))
}

/// Joins the stream's room as a subscriber of its publisher; returns the
/// offer Janus makes and the handle to [`start`] with the answer.
pub fn subscribe(base: &HttpUrl, stream: &str) -> Result<(String, Handle), String> {
    let h = attach(base)?;
    let attached = message(
        &h,
        json!({"request": "join", "ptype": "subscriber", "room": room_of(stream),
               "streams": [{"feed": FEED}]}),
        None,
    )?;
    let offer = attached["jsep"]["sdp"]
        .as_str()
        .ok_or("janus subscribe: no offer in its reply")?;
    Ok((offer.to_string(), h))
}

/// Answers a subscriber's offer and starts its media.
pub fn start(h: &Handle, answer: &str) -> Result<(), String> {
    message(
        h,
        json!({"request": "start"}),
        Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
    )
    .map(|_| ())
}

/// Ends a session and every handle in it.
pub fn destroy(session: &HttpUrl) {
    let _ = post(session, json!({"janus": "destroy"}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_stable_distinct_and_exact_in_json() {
        assert_eq!(room_of("bench-0"), room_of("bench-0"));
        assert_ne!(room_of("bench-0"), room_of("bench-1"));
        assert_ne!(room_of("round1-0"), room_of("round2-0"));
        for s in ["", "a", "bench-0", "paced-3"] {
            let r = room_of(s);
            assert!(r > 0 && r < 1 << 53, "{s}: {r}");
        }
    }

    #[test]
    fn plugin_errors_fail_and_jsep_is_kept() {
        let err = json!({"janus": "event", "plugindata": {"data": {
            "videoroom": "event", "error_code": 426, "error": "No such room"}}});
        assert!(plugin_data(err).unwrap_err().contains("426"));
        let ok = json!({"janus": "event", "plugindata": {"data": {"videoroom": "joined"}},
                        "jsep": {"type": "answer", "sdp": "v=0"}});
        let d = plugin_data(ok).unwrap();
        assert_eq!(d["videoroom"], "joined");
        assert_eq!(d["jsep"]["sdp"], "v=0");
    }
}
