//! The answers an SDK connection gives itself to RPC messages over its
//! limits (docs/sdk-protocol.md, "Limits"): those never reach the engine.

use serde_json::{json, Value};

/// `error {code: "too_large"}`: a message over the size limit is not read,
/// so there is no request id to answer.
pub(crate) fn too_large(len: usize) -> String {
    json!({
        "event": "error",
        "code": "too_large",
        "message": format!(
            "a message of {len} bytes is over the limit of {} bytes",
            crate::endpoint::MAX_RPC_MESSAGE
        ),
    })
    .to_string()
}

/// The answer to a request over the rate limit, with its id when the
/// message has one.
pub(crate) fn rate_limited(data: &[u8]) -> String {
    let id = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Value::Null);
    json!({
        "id": id,
        "ok": false,
        "error": {
            "code": "rate_limited",
            "message": format!(
                "more than {} requests a second (bursts of {})",
                crate::endpoint::RPC_RATE,
                crate::endpoint::RPC_BURST
            ),
        },
    })
    .to_string()
}

/// A message that is not UTF-8 text.
pub(crate) fn not_utf8() -> String {
    json!({
        "event": "error",
        "code": "bad_request",
        "message": "messages are JSON text (UTF-8)",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_answer_echoes_the_id_when_there_is_one() {
        let v: Value = serde_json::from_str(&rate_limited(br#"{"id":7,"request":"x"}"#)).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "rate_limited");
        let v: Value = serde_json::from_str(&rate_limited(b"\xff garbage")).unwrap();
        assert_eq!(v["id"], Value::Null);
        let v: Value = serde_json::from_str(&too_large(20_000)).unwrap();
        assert_eq!(v["code"], "too_large");
    }
}
