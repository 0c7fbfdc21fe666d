//! A connected session survives hostile input from its peer's address.
//!
//! The publisher and the viewer are connected (ICE, DTLS, SRTP up) before
//! anything is thrown at the server: mutated copies of the publisher's own
//! datagrams (STUN, DTLS, SRTP, SRTCP) and random ones, all from the
//! publisher's address, so that every layer behind the demultiplexer parses
//! them. Afterwards the session must still carry media, bit-exact.

mod common;

use std::time::Duration;

use common::*;
use corecast_media::MediaKind;
use corecast_twin::{Alphabet, Inputs};

#[test]
fn a_connected_session_carries_media_through_mangled_and_replayed_input() {
    let (mut w, p, v) = World::connected_pair();
    let from = w.clients[p].addr;
    w.capture_from = Some(from);
    let mut seq = warm_up(&mut w, p, &[v], 3000);
    // Real traffic of every kind from the publisher: media, then its RTCP.
    for i in 0..50u64 {
        w.send_video(p, seq, i as u32 * 3000, &payload(i));
        seq += 1;
        w.run(Duration::from_millis(20));
    }
    w.run(Duration::from_secs(2));
    let seeds = std::mem::take(&mut w.captured);
    w.capture_from = None;
    let kinds = |first: u8| seeds.iter().filter(|d| d.first() == Some(&first)).count();
    assert!(seeds.len() > 50, "captured {} datagrams", seeds.len());
    assert!(seeds.iter().any(|d| d[0] < 4), "STUN among the seeds");
    assert!(kinds(0x80) + kinds(0x90) > 0, "SRTP/SRTCP among the seeds");

    for c in w.clients.iter_mut() {
        c.events.clear();
    }
    let seed_refs: Vec<&[u8]> = seeds.iter().map(|d| d.as_slice()).collect();
    let mut inputs = Inputs::new(13, &seed_refs, Alphabet::Binary, 300);
    let mut d = Vec::new();
    let mut refused = 0usize;
    for n in 0..20_000usize {
        if n % 5 == 4 {
            inputs.random(&mut d);
        } else if n % 7 == 3 {
            // A replay, unchanged.
            d.clear();
            d.extend_from_slice(&seeds[n % seeds.len()]);
        } else {
            inputs.mutated(&mut d);
        }
        refused += usize::from(!w.inject(from, &d));
        if n % 100 == 0 {
            w.run(Duration::from_millis(1));
        }
    }
    assert!(
        w.received(v, MediaKind::Video).is_empty(),
        "no replayed or forged packet reached the viewer"
    );
    assert_eq!(
        w.legs[p].closed, None,
        "the publisher's session is still open"
    );
    assert!(w.legs[p].endpoint.is_connected());
    assert!(refused > 1000, "most garbage is refused ({refused})");

    // Media still flows, bit-exact.
    for c in w.clients.iter_mut() {
        c.events.clear();
    }
    for i in 0..100u64 {
        assert!(w.send_video(p, seq, (1000 + i) as u32 * 3000, &payload(1000 + i)));
        seq += 1;
        w.run(Duration::from_millis(10));
    }
    w.run(Duration::from_millis(200));
    let got: Vec<Vec<u8>> = w.video_payloads(v);
    let want: Vec<Vec<u8>> = (0..100).map(|i| payload(1000 + i)).collect();
    assert_eq!(
        got, want,
        "the viewer gets every packet sent after the attack"
    );
}
