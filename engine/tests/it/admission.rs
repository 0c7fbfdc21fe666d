//! Admission control over HTTP: pending endpoints (answered, not yet
//! connected) are limited node-wide and count toward the node's capacity;
//! a refusal is a 503 with Retry-After.

use crate::common::{http, metric, offer, test_settings};
use corecast::{Node, Settings};

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

fn offers(n: usize, publisher: bool) -> Vec<String> {
    (0..n).map(|i| offer(publisher, 5000 + i as u16)).collect()
}

#[test]
fn pending_sessions_beyond_the_limit_get_503_with_retry_after() {
    let node = Node::start(&Settings {
        max_pending: 3,
        ..test_settings(2)
    })
    .expect("node starts");
    let h = node.http_addr;
    let mut locations = Vec::new();
    for (i, offer) in offers(3, true).iter().enumerate() {
        // Nobody sends STUN: these stay pending.
        let r = http(h, "POST", &format!("/whip/s{i}"), &[SDP], offer.as_bytes());
        assert_eq!(r.status, 201, "{}", r.body);
        locations.push(r.header("location").unwrap().to_string());
    }
    let more = offers(1, true);
    let r = http(h, "POST", "/whip/more", &[SDP], more[0].as_bytes());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("--max-pending"), "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .expect("a 503 says when to retry")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry));
    let view = offers(1, false);
    let r = http(h, "POST", "/whep/s0", &[SDP], view[0].as_bytes());
    assert_eq!(r.status, 503, "viewers are pending endpoints too");
    assert!(r.header("retry-after").is_some());
    assert_eq!(metric(h, "corecast_sessions_refused_total"), 2);
    // One pending session goes: there is room again.
    assert_eq!(http(h, "DELETE", &locations[0], &[], b"").status, 200);
    let r = http(h, "POST", "/whip/more", &[SDP], more[0].as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    node.shutdown();
}

#[test]
fn pending_endpoints_count_toward_the_capacity() {
    // Capacity: 1 shard × 2 endpoints; the pending limit is not what refuses.
    let node = Node::start(&Settings {
        max_endpoints_per_shard: 2,
        max_pending: 100,
        ..test_settings(1)
    })
    .expect("node starts");
    let h = node.http_addr;
    let all = offers(3, true);
    for (i, offer) in all[..2].iter().enumerate() {
        let r = http(h, "POST", &format!("/whip/c{i}"), &[SDP], offer.as_bytes());
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = http(h, "POST", "/whip/c2", &[SDP], all[2].as_bytes());
    assert_eq!(
        r.status, 503,
        "two pending endpoints fill a capacity of two: {}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
    node.shutdown();
}
