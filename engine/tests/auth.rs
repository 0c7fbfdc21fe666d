//! Room tokens over HTTP: a node with `--auth-secret` lets a WHIP or WHEP
//! request through only with a token that allows its room and action (or
//! the static token); 401 for missing, forged or expired tokens, 403 for
//! valid ones without the permission, with the reason in the body.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{http, offer, test_settings};
use corecast::control::auth::{mint, Claims};
use corecast::{Node, Settings};

const SECRET: &str = "the secret of this test node";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(room: &str, publish: bool, subscribe: bool, exp: u64) -> String {
    let claims = Claims {
        room: room.into(),
        peer: None,
        publish,
        subscribe,
        transports: None,
        exp,
        nbf: None,
    };
    format!("Bearer {}", mint(SECRET.as_bytes(), &claims).unwrap())
}

#[test]
fn room_tokens_allow_their_room_and_action_only() {
    let node = Node::start(&Settings {
        auth_secret: Some(SECRET.into()),
        token: Some("static-admin-token".into()),
        ..test_settings(1)
    })
    .expect("node starts");
    let h = node.http_addr;
    let post = |path: &str, auth: Option<&str>, publisher: bool| {
        let mut headers = vec![("Content-Type", "application/sdp")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        http(h, "POST", path, &headers, offer(publisher, 5000).as_bytes())
    };
    let hour = now_unix() + 3600;
    let publish = token("live", true, false, hour);

    let r = post("/whip/live", Some(&publish), true);
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.header("location").unwrap().to_string();
    // The same token may end its own session, and not view.
    let r = post("/whep/live", Some(&publish), false);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("does not allow subscribe"), "{}", r.body);
    // Another room.
    let r = post("/whip/other", Some(&publish), true);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("room 'live'"), "{}", r.body);
    // Missing, forged, expired.
    let r = post("/whip/live", None, true);
    assert_eq!(r.status, 401, "{}", r.body);
    let forged = format!(
        "Bearer {}",
        mint(
            b"not the node's secret at all",
            &Claims {
                room: "live".into(),
                peer: None,
                publish: true,
                subscribe: true,
                transports: None,
                exp: hour,
                nbf: None,
            }
        )
        .unwrap()
    );
    let r = post("/whip/live", Some(&forged), true);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("signature"), "{}", r.body);
    let expired = token("live", true, true, now_unix() - 5);
    let r = post("/whep/live", Some(&expired), false);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    // A viewer's token, and the static token, which allows everything.
    let view = token("live", false, true, hour);
    assert_eq!(post("/whep/live", Some(&view), false).status, 201);
    let admin = "Bearer static-admin-token";
    assert_eq!(post("/whep/other", Some(admin), false).status, 201);
    // DELETE is checked as the resource's action: a viewer's token cannot
    // end the publisher's session, the publisher's can.
    let r = http(h, "DELETE", &location, &[("Authorization", &view)], b"");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(h, "DELETE", &location, &[("Authorization", &publish)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    node.shutdown();
}
