//! Room tokens over HTTP: a node with `--auth-secret` lets a WHIP or WHEP
//! request through only with a token that allows its room and action (or
//! the static token); 401 for missing, forged or expired tokens, 403 for
//! valid ones without the permission, with the reason in the body.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{http, offer, test_settings};
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

/// An SDK connect body (the Rust room client's offer: publishes audio and
/// video, one slot of each) with an optional token field.
fn connect_body(room: &str, peer: &str, token: Option<&str>) -> String {
    use corecast_media::MediaKind;
    let config = corecast_webrtc::EndpointConfig::new(vec![]);
    let publish = [("audio", MediaKind::Audio), ("video", MediaKind::Video)];
    let (client, offer) = corecast_webrtc::RoomClient::new(
        &config,
        std::time::Instant::now(),
        "127.0.0.1:5000".parse().unwrap(),
        &publish,
        1,
        1,
    )
    .unwrap();
    let mut body: serde_json::Value =
        serde_json::from_str(&client.connect_body(room, peer, &offer, serde_json::json!({})))
            .unwrap();
    if let Some(t) = token {
        body["token"] = t.into();
    }
    body.to_string()
}

#[test]
fn sdk_connections_need_a_token_for_their_room_peer_and_actions() {
    let node = Node::start(&Settings {
        auth_secret: Some(SECRET.into()),
        ..test_settings(1)
    })
    .expect("node starts");
    let h = node.http_addr;
    let hour = now_unix() + 3600;
    let mint_for = |peer: Option<&str>, publish: bool, transports: Option<Vec<String>>| {
        let claims = Claims {
            room: "conf".into(),
            peer: peer.map(String::from),
            publish,
            subscribe: true,
            transports,
            exp: hour,
            nbf: None,
        };
        mint(SECRET.as_bytes(), &claims).unwrap()
    };
    let connect = |body: String, auth: Option<String>| {
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(h, "POST", "/webrtc/connect", &headers, body.as_bytes())
    };
    // No token.
    let r = connect(connect_body("conf", "ann", None), None);
    assert_eq!(r.status, 401, "{}", r.body);
    // A token for another peer.
    let bob = mint_for(Some("bob"), true, None);
    let r = connect(connect_body("conf", "ann", Some(&bob)), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("peer 'bob'"), "{}", r.body);
    // Publishing without the permission.
    let viewer = mint_for(Some("ann"), false, None);
    let r = connect(connect_body("conf", "ann", Some(&viewer)), None);
    assert_eq!(r.status, 403, "{}", r.body);
    // A token for WHIP only.
    let whip_only = mint_for(None, true, Some(vec!["whip".into()]));
    let r = connect(connect_body("conf", "ann", Some(&whip_only)), None);
    assert_eq!(r.status, 403, "{}", r.body);
    // The right token, in the body or as a header.
    let ann = mint_for(Some("ann"), true, Some(vec!["sdk".into()]));
    let r = connect(connect_body("conf", "ann", Some(&ann)), None);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = connect(
        connect_body("conf", "ann", None),
        Some(format!("Bearer {ann}")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // (It replaced the first connection of ann.)
    let conn: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    // PATCH and DELETE of the connection need the token too.
    let path = format!("/webrtc/{}", conn["conn"].as_str().unwrap());
    let r = http(h, "DELETE", &path, &[], b"");
    assert_eq!(r.status, 401, "{}", r.body);
    let auth = format!("Bearer {ann}");
    let restart = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\n";
    let r = http(
        h,
        "PATCH",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/trickle-ice-sdpfrag"),
        ],
        restart.as_bytes(),
    );
    assert_eq!(r.status, 200, "an ICE restart answers: {}", r.body);
    assert!(r.body.contains("a=ice-ufrag:"), "{}", r.body);
    // Bob's token does not end ann's connection.
    let bob = format!("Bearer {bob}");
    let r = http(h, "DELETE", &path, &[("Authorization", &bob)], b"");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(h, "DELETE", &path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http(h, "DELETE", &path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    node.shutdown();
}
