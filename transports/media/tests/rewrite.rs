//! The rewriter keeps a viewer's stream continuous across publisher changes.

use std::time::{Duration, Instant};

use corecast_media::{ChannelId, Rewriter};

const A: ChannelId = ChannelId(1);
const B: ChannelId = ChannelId(2);

#[test]
fn first_source_starts_at_the_subscribers_sequence_and_keeps_its_timestamps() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 777);
    for i in 0..10u64 {
        let out = r.rewrite(A, 1000 + i, 5000 + i as u32 * 3000, t0).unwrap();
        assert_eq!(out.seq, 777 + i);
        assert_eq!(out.rtp_time, 5000 + i as u32 * 3000);
    }
}

#[test]
fn a_source_past_its_wrap_still_starts_the_subscriber_at_roc_zero() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 20_000);
    // The publisher started at 65,500 and has wrapped: extended 65,536 + 300.
    let out = r.rewrite(A, 65_836, 0, t0).unwrap();
    assert_eq!(out.seq, 20_000);
    assert_eq!(
        out.seq >> 16,
        0,
        "the subscriber's rollover counter starts at 0"
    );
}

#[test]
fn switch_continues_sequence_and_time() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 100);
    r.rewrite(A, 100, 9000, t0).unwrap();
    let last = r.rewrite(A, 101, 12000, t0).unwrap();
    // 100 ms later a new publisher starts at an unrelated place.
    let t1 = t0 + Duration::from_millis(100);
    let first = r.rewrite(B, 50_000, 4_000_000_000, t1).unwrap();
    assert_eq!(first.seq, last.seq + 1);
    assert_eq!(first.rtp_time, last.rtp_time + 9000);
    let second = r.rewrite(B, 50_001, 4_000_003_000, t1).unwrap();
    assert_eq!(second.seq, first.seq + 1);
    assert_eq!(second.rtp_time, first.rtp_time + 3000);
}

#[test]
fn timestamp_wraps_like_rtp() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(48_000, 1);
    r.rewrite(A, 1, u32::MAX - 10, t0).unwrap();
    let out = r.rewrite(A, 2, 950, t0).unwrap();
    assert_eq!(out.rtp_time, 950);
    let t1 = t0 + Duration::from_millis(20);
    let b = r.rewrite(B, 7, 0, t1).unwrap();
    assert_eq!(b.rtp_time, 950 + 960);
    assert_eq!(b.seq, 3);
}

#[test]
fn reordered_packets_from_before_a_sources_first_one_are_dropped() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 10);
    let a = r.rewrite(A, 10, 0, t0).unwrap();
    let b0 = r.rewrite(B, 500, 0, t0).unwrap();
    assert_eq!(b0.seq, a.seq + 1);
    // A reordered packet of B from just before its first one would reuse a
    // sequence number already sent (A's): dropped.
    assert_eq!(r.rewrite(B, 499, 0, t0), None);
    assert_eq!(r.rewrite(B, 400, 0, t0), None);
    // Later packets of B continue, gaps kept (the viewer NACKs them).
    assert_eq!(r.rewrite(B, 502, 0, t0).unwrap().seq, b0.seq + 2);
    assert_eq!(r.rewrite(B, 501, 0, t0).unwrap().seq, b0.seq + 1);
}

#[test]
fn zero_elapsed_time_still_advances_the_clock() {
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 100);
    let a = r.rewrite(A, 1, 100, t0).unwrap();
    let b = r.rewrite(B, 1, 100, t0).unwrap();
    assert!(b.rtp_time > a.rtp_time);
}
