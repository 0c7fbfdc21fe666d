//! Registrations and calls out on loopback: a phone registers with digest
//! authentication (`[[sip.users]]`), the API calls it into a room, the
//! room's SDK peer follows the call's `sip_call` events and talks with it
//! in tones; wrong passwords get a source blocked.

use crate::common;

use std::time::Duration;

use crate::common::{http, plain_metric, test_settings};
use crate::sip_phone::*;
use corecast::config::{Settings, SipSettings, SipUser};
use corecast::node::Node;
use serde_json::json;

fn settings() -> Settings {
    Settings {
        sip: Some(SipSettings {
            port: 0,
            rtp_ports: (32_300, 32_399),
            ring_timeout: std::time::Duration::from_secs(60),
            hook: None,
            users: vec![SipUser {
                user: "alice".into(),
                password: Some("wonderland".into()),
                ha1: None,
            }],
        }),
        ..test_settings(2)
    }
}

fn post_call(node: &Node, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = http(
        node.http_addr,
        "POST",
        "/api/sip/calls",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(json!(r.body)),
    )
}

/// The states of the `sip_call` events the browser peer got for call `id`.
fn states(web: &Listener, id: &str) -> Vec<String> {
    web.peer
        .events("sip_call")
        .iter()
        .filter(|e| e["id"] == id)
        .map(|e| {
            let reason = e["reason"]
                .as_str()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            format!("{}{reason}", e["state"].as_str().unwrap_or("?"))
        })
        .collect()
}

#[test]
fn a_registered_phone_is_called_into_a_room_and_talks() {
    let node = Node::start(&settings()).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut phone = Phone::new(sip);
    assert_eq!(phone.register("alice", "wonderland"), 200);
    let r = http(node.http_addr, "GET", "/api/sip/registrations", &[], b"");
    let regs: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(regs["registrations"][0]["aor"], "alice@127.0.0.1");
    assert!(regs["registrations"][0]["session"]
        .as_str()
        .unwrap()
        .contains('-'));

    let mut web = Listener::new(&node, "out");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));
    // Nobody by that name.
    assert_eq!(post_call(&node, json!({"to": "bob", "room": "out"})).0, 404);
    let (status, call) = post_call(
        &node,
        json!({"to": "alice", "room": "out", "peer": "alice-phone"}),
    );
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["state"], "calling");
    assert_eq!(call["direction"], "out");
    let id = call["id"].as_str().unwrap().to_string();

    let invite = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .expect("the node calls the phone");
    phone.answer(&invite);
    assert!(phone.wait_request("ACK", Duration::from_secs(5)).is_some());
    // The room's peer saw the call ring and be answered; the phone joined.
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| {
            w.peer
                .events("peer_joined")
                .iter()
                .any(|e| e["peer"] == "alice-phone")
        }
    ));
    assert_eq!(states(&web, &id), vec!["calling", "ringing", "answered"]);
    web.peer.request(
        "subscribe",
        json!({"peer": "alice-phone", "track": "audio"}),
    );
    converse(&mut phone, &mut web, Duration::from_secs(4));
    let phone_hears = dominant_hz(&phone.heard, 8000);
    assert!(
        (phone_hears - 880.0).abs() <= 5.0,
        "the phone hears {phone_hears} Hz"
    );
    let web_hears = dominant_hz(&web.heard, 48_000);
    assert!(
        (web_hears - 440.0).abs() <= 5.0,
        "the browser hears {web_hears} Hz"
    );

    // The API hangs up: our BYE reaches the phone.
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(phone.answer_bye(Duration::from_secs(5)));
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| {
            states(w, &id)
                .last()
                .is_some_and(|s| s.starts_with("ended"))
        }
    ));
    assert_eq!(
        plain_metric(node.http_addr, "corecast_sip_calls_placed_total"),
        1
    );
    node.shutdown();
}

#[test]
fn a_busy_phone_and_an_unanswered_call_end_with_their_reason() {
    let node = Node::start(&settings()).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut phone = Phone::new(sip);
    let mut web = Listener::new(&node, "busy");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));
    // A URI with an IP address needs no registration.
    let uri = format!("sip:alice@{}", phone.sip_addr());
    let (status, call) = post_call(&node, json!({"to": uri, "room": "busy"}));
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_string();
    let invite = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .unwrap();
    phone.respond(&invite, 486, "");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| {
            states(w, &id)
                .last()
                .is_some_and(|s| s.starts_with("ended"))
        }
    ));
    assert_eq!(states(&web, &id), vec!["calling", "ended sip_refused 486"]);

    // Hung up while it rings: CANCEL, then 487 ends it.
    let (_, call) = post_call(&node, json!({"to": uri, "room": "busy"}));
    let id = call["id"].as_str().unwrap().to_string();
    let invite = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .unwrap();
    phone.respond(&invite, 180, "");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| { states(w, &id).last().map(String::as_str) == Some("ringing") }
    ));
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let cancel = phone
        .wait_request("CANCEL", Duration::from_secs(5))
        .unwrap();
    phone.respond(&cancel, 200, "");
    phone.respond(&invite, 487, "");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| {
            states(w, &id)
                .last()
                .is_some_and(|s| s.starts_with("ended"))
        }
    ));
    assert_eq!(
        states(&web, &id),
        vec!["calling", "ringing", "ended sip_cancelled"]
    );
    node.shutdown();
}

#[test]
fn wrong_passwords_block_their_source() {
    let node = Node::start(&settings()).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut attacker = Phone::on("127.0.0.2", sip);
    for _ in 0..10 {
        assert_eq!(attacker.register("alice", "guess"), 403);
    }
    // Blocked now: even the right password is refused, from that source.
    assert_eq!(attacker.register("alice", "wonderland"), 403);
    assert!(common::wait_for(Duration::from_secs(2), || plain_metric(
        node.http_addr,
        "corecast_sip_auth_failures_total"
    ) >= 10));
    assert!(common::wait_for(Duration::from_secs(2), || plain_metric(
        node.http_addr,
        "corecast_sip_blocked_total"
    ) >= 1));
    // Another source is not affected.
    let mut phone = Phone::new(sip);
    assert_eq!(phone.register("alice", "wonderland"), 200);
    node.shutdown();
}

#[test]
fn a_call_through_another_node_is_placed_where_the_phone_registered() {
    use corecast_cluster::NodeRole;
    let with_sip = |mut s: Settings, rtp: (u16, u16)| {
        s.sip = Some(SipSettings {
            port: 0,
            rtp_ports: rtp,
            ring_timeout: std::time::Duration::from_secs(60),
            hook: None,
            users: settings().sip.unwrap().users,
        });
        s
    };
    let a = Node::start(&with_sip(
        common::clustered_settings(1, 1, NodeRole::All, vec![]),
        (32_400, 32_449),
    ))
    .unwrap();
    let b = Node::start(&with_sip(
        common::clustered_settings(1, 2, NodeRole::All, vec![a.cluster_addr.unwrap()]),
        (32_450, 32_499),
    ))
    .unwrap();
    let mut phone = Phone::new(a.sip_addr.unwrap());
    assert_eq!(phone.register("alice", "wonderland"), 200);
    // B learns the binding from the cluster's key-value store.
    let on_b = || {
        let r = http(b.http_addr, "GET", "/api/sip/registrations", &[], b"");
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["registrations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["aor"] == "alice@127.0.0.1" && r["node"] == 1)
    };
    assert!(
        common::wait_for(Duration::from_secs(20), on_b),
        "B never saw alice"
    );

    let mut web = Listener::new(&b, "far");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));
    // Asked of B, placed by A.
    let (status, call) = post_call(&b, json!({"to": "alice", "room": "far", "peer": "alice"}));
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_string();
    assert_eq!(id.parse::<u64>().ok(), None);
    assert_eq!(
        u64::from_str_radix(&id, 16).unwrap() >> 48,
        1,
        "a connection of node 1"
    );
    let invite = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .expect("node A calls the phone");
    phone.answer(&invite);
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| {
            w.peer
                .events("peer_joined")
                .iter()
                .any(|e| e["peer"] == "alice")
        }
    ));
    web.peer
        .request("subscribe", json!({"peer": "alice", "track": "audio"}));
    converse(&mut phone, &mut web, Duration::from_secs(5));
    let phone_hears = dominant_hz(&phone.heard, 8000);
    assert!(
        (phone_hears - 880.0).abs() <= 5.0,
        "the phone on A hears {phone_hears} Hz from B"
    );
    let web_hears = dominant_hz(&web.heard, 48_000);
    assert!(
        (web_hears - 440.0).abs() <= 5.0,
        "the browser on B hears {web_hears} Hz from A"
    );
    let r = http(
        a.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(phone.answer_bye(Duration::from_secs(5)));
    b.shutdown();
    a.shutdown();
}

#[test]
fn a_call_that_only_rings_is_cancelled_at_the_ring_timeout() {
    let mut s = settings();
    if let Some(sip) = s.sip.as_mut() {
        sip.ring_timeout = Duration::from_secs(1);
    }
    let node = Node::start(&s).unwrap();
    let mut phone = Phone::new(node.sip_addr.unwrap());
    let uri = format!("sip:alice@{}", phone.sip_addr());
    let (status, call) = post_call(&node, json!({"to": uri, "room": "lonely"}));
    assert_eq!(status, 201, "{call}");
    let invite = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .unwrap();
    // 180 stops timer B; nobody picks up.
    phone.respond(&invite, 180, "");
    let cancel = phone
        .wait_request("CANCEL", Duration::from_secs(5))
        .expect("the node cancels the unanswered call");
    phone.respond(&cancel, 200, "");
    phone.respond(&invite, 487, "");
    let gone = || {
        let r = http(node.http_addr, "GET", "/api/sip/calls", &[], b"");
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["calls"]
            .as_array()
            .unwrap()
            .is_empty()
    };
    assert!(common::wait_for(Duration::from_secs(5), gone));
    node.shutdown();
}
