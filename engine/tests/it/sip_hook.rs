//! The application's SIP hook on loopback: a small HTTP server written
//! here says who users are (`/sip/auth`), where calls go (`/sip/invite`)
//! and records what became of the calls placed (`/sip/event`).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{http, test_settings};
use crate::sip_phone::*;
use corecast::config::{Settings, SipSettings};
use corecast::node::Node;
use serde_json::{json, Value};

/// What the hook was asked, in order: (path, body).
type Asked = Arc<Mutex<Vec<(String, Value)>>>;

/// A hook: bob's password is "builder"; calls to `sip:vip@…` go into room
/// `lounge` as peer `guest`; calls to `sip:blocked@…` are refused 603;
/// others are left undecided (an answer without an action).
fn start_hook() -> (String, Asked) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked: Asked = Arc::default();
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                data.extend_from_slice(&buf[..n]);
                if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..at]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while data.len() < at + 4 + len {
                        let n = stream.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    break (head, data[at + 4..].to_vec());
                }
            };
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap().push((path.clone(), body.clone()));
            let (status, answer) = match path.as_str() {
                "/sip/auth" if body["user"] == "bob" => {
                    let ha1 = format!("{:x}", md5::compute(b"bob:corecast:builder"));
                    ("200 OK", json!({ "ha1": ha1 }))
                }
                "/sip/auth" => ("404 Not Found", json!({})),
                "/sip/invite" if body["to"].as_str().unwrap_or("").contains("vip@") => (
                    "200 OK",
                    json!({"action": "accept", "room": "lounge", "peer": "guest"}),
                ),
                "/sip/invite" if body["to"].as_str().unwrap_or("").contains("blocked@") => {
                    ("200 OK", json!({"action": "reject", "status": 603}))
                }
                "/sip/invite" => ("200 OK", json!({"action": "ponder"})),
                _ => ("200 OK", json!({})),
            };
            let text = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, asked)
}

fn settings(hook: &str) -> Settings {
    Settings {
        sip: Some(SipSettings {
            port: 0,
            rtp_ports: (32_500, 32_599),
            users: Vec::new(),
            ring_timeout: Duration::from_secs(60),
            hook: Some(hook.to_string()),
        }),
        ..test_settings(1)
    }
}

#[test]
fn the_hook_says_who_registers_and_where_calls_go() {
    let (url, asked) = start_hook();
    let node = Node::start(&settings(&url)).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut phone = Phone::new(sip);
    // Users come from the hook (asked once, then cached).
    assert_eq!(phone.register("bob", "builder"), 200);
    assert_eq!(phone.register("bob", "wrong"), 403);
    assert_eq!(phone.register("nobody", "x"), 403);
    let auths: Vec<Value> = asked
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/sip/auth")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(auths.len(), 2, "bob once (cached), nobody once: {auths:?}");
    assert_eq!(auths[0], json!({"user": "bob", "realm": "corecast"}));

    // The hook puts a call to sip:vip@ into room lounge as peer guest.
    let mut web = Listener::new(&node, "lounge");
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));
    assert_eq!(phone.call("vip"), 200);
    let joined = pump_until(&mut phone, &mut web, Duration::from_secs(5), |_, w| {
        w.peer
            .events("peer_joined")
            .iter()
            .any(|e| e["peer"] == "guest")
    });
    assert!(joined, "{:?}", web.peer.messages);
    let invite = asked
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "/sip/invite")
        .map(|(_, b)| b.clone())
        .unwrap();
    assert!(invite["to"].as_str().unwrap().starts_with("sip:vip@"));
    assert!(invite["from"].as_str().unwrap().starts_with("sip:phone@"));
    assert_eq!(phone.bye(), 200);

    // Refused by the hook; undecided → 480.
    let mut other = Phone::new(sip);
    assert_eq!(other.call("blocked"), 603);
    let mut third = Phone::new(sip);
    assert_eq!(third.call("somewhere"), 480);

    // A call placed through the API: its events reach the hook.
    let uri = format!("sip:bob@{}", phone.sip_addr());
    let r = http(
        node.http_addr,
        "POST",
        "/api/sip/calls",
        &[("Content-Type", "application/json")],
        json!({"to": uri, "room": "lounge"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let placed = phone
        .wait_request("INVITE", Duration::from_secs(5))
        .unwrap();
    phone.respond(&placed, 486, "");
    let events = || -> Vec<String> {
        asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/sip/event")
            .map(|(_, b)| format!("{} {}", b["state"].as_str().unwrap_or("?"), b["room"]))
            .collect()
    };
    assert!(common::wait_for(Duration::from_secs(5), || events().len() >= 2));
    assert_eq!(
        events(),
        vec![
            "calling \"lounge\"".to_string(),
            "ended \"lounge\"".to_string()
        ]
    );
    node.shutdown();
}
