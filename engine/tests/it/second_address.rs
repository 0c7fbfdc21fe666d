//! A client whose first STUN request reaches one shard and whose media pair
//! (another server address, so another 4-tuple) the kernel hashes to the
//! other shard: the other shard learns the address from the control thread
//! and forwards its datagrams to the endpoint's shard over the ring. Media
//! flows, and the forwarded datagrams are counted as cross-shard ingress.
//!
//! The node advertises two ICE addresses (127.0.0.1 and 127.0.0.2). The test
//! client lets exactly one STUN request reach 127.0.0.2 (its shard claims the
//! session) and never sees the answer, so its only working pair is the one
//! to 127.0.0.1. Whether that 4-tuple lands on the other shard is up to the
//! kernel's hash: the test retries with new nodes and client ports until it
//! does (seen in the per-shard receive counters).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{http, per_shard, test_settings};
use corecast::{Node, Settings};
use corecast_media::MediaKind;
use corecast_webrtc::{Client, EndpointConfig, Output};

/// A publisher whose datagrams to and from one server address are filtered.
struct Split {
    socket: UdpSocket,
    local: SocketAddr,
    client: Client,
    next_timeout: Instant,
    /// The address that gets one STUN request and nothing else.
    claim: SocketAddr,
    /// The address of the media pair: nothing goes there before `open_at`.
    media: SocketAddr,
    open_at: Option<Instant>,
    claim_sent: bool,
    location: String,
}

fn is_stun(d: &[u8]) -> bool {
    d.first().is_some_and(|b| *b < 2)
}

impl Split {
    fn join(http_addr: SocketAddr, claim: SocketAddr, media: SocketAddr) -> Split {
        let config = EndpointConfig::new(vec![]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let (mut client, offer) = Client::publisher(&config, now, local).unwrap();
        let r = http(
            http_addr,
            "POST",
            "/whip/split",
            &[("Content-Type", "application/sdp")],
            offer.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        client.accept_answer(&r.body).unwrap();
        let location = r.header("location").unwrap().to_string();
        Split {
            location,
            socket,
            local,
            client,
            next_timeout: now,
            claim,
            media,
            open_at: None,
            claim_sent: false,
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(t) => {
                    let to = t.destination;
                    let send = if to == self.claim {
                        let first = !self.claim_sent && is_stun(&t.contents);
                        if first {
                            self.claim_sent = true;
                            self.open_at = Some(now + Duration::from_millis(200));
                        }
                        first
                    } else if to == self.media {
                        self.open_at.is_some_and(|at| now >= at)
                    } else {
                        true
                    };
                    if send {
                        let _ = self.socket.send_to(&t.contents, to);
                    }
                }
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
            }
        }
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            if from == self.claim {
                // The client never learns that the claim's pair works.
                continue;
            }
            let now = Instant::now();
            let _ = self.client.handle_receive(now, from, self.local, &buf[..n]);
            self.drain(now);
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            self.client.handle_timeout(now);
            self.drain(now);
        }
    }

    fn pump_for(&mut self, limit: Duration, mut done: impl FnMut(&mut Split) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.pump();
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        false
    }
}

fn two_address_settings() -> Settings {
    Settings {
        ice_ips: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
        ..test_settings(2)
    }
}

#[test]
fn media_from_a_second_address_reaches_the_endpoint_on_the_other_shard() {
    for attempt in 0..24 {
        let node = Node::start(&two_address_settings()).expect("node starts");
        let h = node.http_addr;
        assert_eq!(node.media_addrs.len(), 2, "one media address per --ice-ip");
        let media = node.media_addrs[0];
        let claim = node.media_addrs[1];
        let mut client = Split::join(h, claim, media);

        // The one STUN request to the claim address places the session.
        let placed = client.pump_for(Duration::from_secs(5), |_| {
            per_shard(h, "corecast_endpoints").iter().sum::<u64>() == 1
        });
        assert!(placed, "the first STUN request places the session");
        let endpoints = per_shard(h, "corecast_endpoints");
        let owner = endpoints.iter().position(|n| *n == 1).unwrap();
        let other = 1 - owner;

        // Now the media pair: connect, then publish.
        let connected = client.pump_for(Duration::from_secs(6), |c| c.client.is_connected());
        let other_rx = per_shard(h, "corecast_rx_packets_total")[other];
        if other_rx == 0 {
            // The media pair's 4-tuple hashed to the owner too: no split.
            assert!(
                connected,
                "attempt {attempt}: a session on one shard connects"
            );
            node.shutdown();
            continue;
        }
        // The media pair lands on the other shard than the first STUN.
        assert!(
            connected,
            "attempt {attempt}: the session connects through the other shard \
             (owner {owner}, other shard received {other_rx} datagrams, \
             bad there: {})",
            per_shard(h, "corecast_bad_packets_total")[other]
        );
        let before = per_shard(h, "corecast_media_packets_total")[owner];
        let mut seq = 1u64;
        let flowed = client.pump_for(Duration::from_secs(5), |c| {
            let now = Instant::now();
            c.client.send(
                now,
                MediaKind::Video,
                seq,
                seq as u32 * 3000,
                true,
                &[0x10, 1],
            );
            c.drain(now);
            seq += 1;
            std::thread::sleep(Duration::from_millis(5));
            per_shard(h, "corecast_media_packets_total")[owner] >= before + 20
        });
        assert!(flowed, "the publisher's media reaches its endpoint");
        assert!(
            per_shard(h, "corecast_cross_shard_ingress_total")[owner] > 0,
            "the owner counts the forwarded datagrams"
        );
        assert!(
            per_shard(h, "corecast_ingress_forwards_total")[other] > 0,
            "the other shard forwarded over the ring"
        );
        assert_eq!(per_shard(h, "corecast_routes")[other], 1);
        eprintln!("split on attempt {attempt}: owner {owner}, other shard {other}");
        // The session ends: the route goes.
        assert_eq!(http(h, "DELETE", &client.location, &[], b"").status, 200);
        let cleaned = client.pump_for(Duration::from_secs(3), |_| {
            per_shard(h, "corecast_routes")[other] == 0
        });
        assert!(cleaned, "the route is removed when the session ends");
        node.shutdown();
        return;
    }
    panic!("24 attempts without a split: the kernel always hashed both pairs to one shard");
}
