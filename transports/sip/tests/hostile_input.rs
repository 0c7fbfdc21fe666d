//! The seeded twin of the libFuzzer target in `fuzz/` (see
//! docs/testing.md): the same harness function, over deterministic inputs
//! (seeds cut to every length, mutations, random text), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use corecast_twin::{run, Alphabet};

const SEEDS: &[&[u8]] = &[
    b"INVITE sip:room1@sfu.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Room <sip:room1@sfu.example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com;transport=udp>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 60\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n",
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n\
v: SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKnashds7\r\n\
max-forwards: 70\r\n\
t: Bob <sip:bob@example.com>\r\n\
f: Bob <sip:bob@example.com>;tag=456248\r\n\
i: 843817637684230@998sdasdh09\r\n\
CSEQ: 1826 REGISTER\r\n\
m: <sip:bob@192.0.2.4>;expires=3600, *\r\n\
Expires: 7200\r\n\
l: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n\
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1\r\n\
To: Room <sip:room1@sfu.example.com>;tag=a6c85cf\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:room1@203.0.113.9>\r\n\
Content-Length: 0\r\n\r\n",
    b"OPTIONS sip:room1@sfu.example.com SIP/2.0\n\
Via:  SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\n\
To:\n <sip:room1@sfu.example.com>\n\
From: sip:caller@example.org;tag=33242\n\
Max-Forwards: 3\n\
Call-ID: fold.0ha0isndaksdj\n\
CSeq: 8\n\tOPTIONS\n\
Accept: application/sdp,\n\tmultipart/mixed\n\n",
    b"SIP/2.0 100 Trying\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
To: <sip:room1@sfu.example.com>\r\n\
From: <sip:alice@example.com>;tag=19\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\r\n",
    b"ACK sip:room1@sfu.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKack1\r\n\
Route: <sip:proxy.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
To: <sip:room1@sfu.example.com>;tag=a6c85cf\r\n\
From: <sip:alice@example.com>;tag=19\r\n\
Call-ID: c1\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n",
];

const SDP_SEEDS: &[&[u8]] = &[
    b"v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-11,16\r\n",
    b"v=0\r\n\
o=- 1470215406 1817862938 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
a=sendonly\r\n\
m=audio 10560 RTP/AVP 96 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/48000\r\n\
a=rtcp:10561\r\n\
a=sendrecv\r\n\
a=ptime:20\r\n",
    b"v=0\n\
o=alice 2466 1049 IN IP6 2001:db8::5\n\
s=Talk\n\
c=IN IP6 2001:db8::1\n\
t=0 0\n\
m=audio 7078 RTP/AVP 96 9 8 101\n\
c=IN IP6 2001:db8::7\n\
a=rtpmap:96 speex/16000\n\
a=rtpmap:101 telephone-event/8000\n\
a=inactive\n\
m=video 9078 RTP/AVPF 97\n\
a=rtpmap:97 H264/90000\n\
m=application 9 UDP/BFCP *\n",
    b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=audio 0 RTP/AVP 8\r\nm=audio 4000 RTP/AVP 18 8\r\na=rtpmap:18 G729/8000\r\n",
];

/// Twin of the fuzz target `sdp`.
#[test]
fn sdp_twin() {
    let mut answered = 0;
    let n = run(0x7364_7021, SDP_SEEDS, Alphabet::Text, 1200, 200_000, |d| {
        answered += usize::from(harness::sdp(d));
    });
    eprintln!("sdp: {n} inputs, {answered} answered");
    assert_eq!(n, 200_000);
    // The mutations keep reaching the codec choice and the answer.
    assert!(answered > 10_000, "{answered}");
}

/// Twin of the fuzz target `message`.
#[test]
fn message_twin() {
    let mut parsed = 0;
    let n = run(0x7369_7021, SEEDS, Alphabet::Text, 600, 300_000, |d| {
        parsed += usize::from(harness::message(d));
    });
    eprintln!("message: {n} inputs, {parsed} parsed");
    assert_eq!(n, 300_000);
    // The mutations keep reaching the printer and the transaction layer.
    assert!(parsed > 30_000, "{parsed} parsed");
}

/// Seeds of the `call` target: a PCMU call's RTP with time passing, a key
/// press, a stranger's packet, the room's Opus, RTCP.
fn call_seeds() -> Vec<Vec<u8>> {
    let rtp = |pt: u8, seq: u16, ts: u32, payload: &[u8]| {
        let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 9]);
        p.extend_from_slice(payload);
        p
    };
    let chunk = |flags: u8, bytes: &[u8]| {
        let mut c = vec![bytes.len() as u8, flags];
        c.extend_from_slice(bytes);
        c
    };
    let mut opus =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("encoder");
    let mut buf = [0u8; 400];
    let n = opus.encode(&[0i16; 960], &mut buf).expect("encode");
    let room_opus = buf[..n].to_vec();
    let mut calls = Vec::new();
    for codec in 0..3u8 {
        let mut s = vec![codec];
        // The phone's own codec: PCMU, PCMA or Opus (the harness's order).
        let (pt, step, payload): (u8, u32, &[u8]) = match codec {
            0 => (0, 160, &[0xff; 160]),
            1 => (8, 160, &[0xd5; 160]),
            _ => (111, 960, &room_opus),
        };
        for i in 0..6u16 {
            s.extend(chunk(0, &rtp(pt, i, u32::from(i) * step, payload)));
            s.extend(chunk(2, &room_opus));
            s.extend(chunk(3 | (1 << 2), &[]));
        }
        s.extend(chunk(0, &rtp(101, 7, 1000, &[5, 0x8a, 0, 160])));
        s.extend(chunk(1, &rtp(0, 8, 1160, &[0x7f; 160])));
        // RTCP to the RTP port (muxed) and to the RTCP port.
        s.extend(chunk(0, &[0x80, 200, 0, 1, 0, 0, 0, 9]));
        s.extend(chunk(0x10, &[0x80, 201, 0, 1, 0, 0, 0, 9]));
        s.extend(chunk(3 | (5 << 2), &[]));
        calls.push(s);
    }
    calls
}

/// Twin of the fuzz target `call`.
#[test]
fn call_twin() {
    let seeds = call_seeds();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut took = 0;
    let n = run(0x6361_6c6c, &seeds, Alphabet::Binary, 1500, 20_000, |d| {
        took += usize::from(harness::call(d));
    });
    eprintln!("call: {n} inputs, {took} with RTP taken");
    assert_eq!(n, 20_000);
    // The mutations keep reaching the jitter buffer and the encoders.
    assert!(took > 1_000, "{took}");
}
