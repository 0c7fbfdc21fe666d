//! A call's media in simulated time: tones in, their frequency out.

use super::*;
use crate::sdp::{Codec as SdpCodec, Direction, TelephoneEvent};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use std::f64::consts::PI;

const PHONE: &str = "192.0.2.7:4000";
const LOCAL: &str = "198.51.100.1:30000";
const RTCP: &str = "198.51.100.1:30001";

fn media(name: CodecName, pt: u8, rate: u32) -> NegotiatedMedia {
    NegotiatedMedia {
        remote: Some(PHONE.parse().unwrap()),
        remote_rtcp: Some("192.0.2.7:4001".parse().unwrap()),
        codec: SdpCodec {
            name,
            pt,
            clock_rate: rate,
            channels: 1,
            fmtp: None,
        },
        telephone_event: Some(TelephoneEvent {
            pt: 101,
            clock_rate: 8000,
        }),
        remote_ptime: None,
        direction: Direction::SendRecv,
        on_hold: false,
    }
}

fn call(media: NegotiatedMedia, now: Instant) -> SipEndpoint {
    let setup = CallSetup {
        conn: ConnId(7),
        local: LOCAL.parse().unwrap(),
        rtcp_local: Some(RTCP.parse().unwrap()),
        wallclock: (
            now,
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ),
        media,
        audio: ChannelId(42),
        ssrc: 1234,
    };
    SipEndpoint::new(CallConfig::default(), setup, now).unwrap()
}

/// `n` samples of a sine of `freq` Hz starting at sample `from`.
fn tone(freq: f64, rate: u32, from: usize, n: usize) -> Vec<i16> {
    (from..from + n)
        .map(|k| (8000.0 * (2.0 * PI * freq * k as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// The frequency of the largest bin of `pcm` at `rate` (1 Hz bins over a
/// second or more).
fn dominant_hz(pcm: &[i16], rate: u32) -> f64 {
    let n = rate as usize;
    let tail = &pcm[pcm.len() - n..];
    let mut buf: Vec<Complex<f64>> = tail
        .iter()
        .map(|&s| Complex::new(f64::from(s), 0.0))
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let (bin, _) = buf[1..n / 2]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.norm().total_cmp(&b.1.norm()))
        .unwrap();
    (bin + 1) as f64 * f64::from(rate) / n as f64
}

fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(pt)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(99)
        .payload(payload)
        .write_vec()
        .unwrap()
}

struct Drained {
    published: Vec<MediaPacket>,
    sent: Vec<Transmit>,
    events: Vec<Event>,
}

fn drain(ep: &mut SipEndpoint, now: Instant, d: &mut Drained) -> Instant {
    loop {
        match ep.poll_output(now) {
            Output::Timeout(at) => return at,
            Output::Transmit(t) => d.sent.push(t),
            Output::Event(Event::Media(p)) => d.published.push(p),
            Output::Event(e) => d.events.push(e),
        }
    }
}

fn drained() -> Drained {
    Drained {
        published: Vec::new(),
        sent: Vec::new(),
        events: Vec::new(),
    }
}

fn datagram(contents: &[u8]) -> Input<'_> {
    Input::Datagram {
        source: PHONE.parse().unwrap(),
        destination: LOCAL.parse().unwrap(),
        contents,
    }
}

#[test]
fn a_phones_tone_reaches_the_room_as_opus() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut d = drained();
    let mut next = drain(&mut ep, t0, &mut d);
    // Two seconds of 440 Hz in 20 ms PCMU packets, ticking as the shard does.
    for n in 0..100u16 {
        let now = t0 + FRAME * u32::from(n);
        let mut payload = Vec::new();
        Law::Pcmu.encode(&tone(440.0, 8000, usize::from(n) * 160, 160), &mut payload);
        let packet = rtp(0, 1000 + n, 160 * u32::from(n), &payload);
        ep.handle_input(now, datagram(&packet)).unwrap();
        while next <= now {
            ep.handle_input(next, Input::Timeout).unwrap();
            next = drain(&mut ep, next, &mut d);
        }
    }
    assert!(d.published.len() >= 90, "{} packets", d.published.len());
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::ActiveCodec(ChannelId(42), c) if c.codec == Codec::Opus)));
    let mut decoder = opus::Decoder::new(48_000, Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; MAX_OPUS_SAMPLES];
    for (i, p) in d.published.iter().enumerate() {
        assert_eq!(p.channel, ChannelId(42));
        assert_eq!(p.seq, i as u64);
        assert_eq!(
            p.rtp_time.wrapping_sub(d.published[0].rtp_time),
            960 * i as u32
        );
        let n = decoder.decode(&p.payload, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    let hz = dominant_hz(&pcm, 48_000);
    assert!((hz - 440.0).abs() <= 5.0, "heard {hz} Hz");
    // Its level is that of the tone (~ -15 dBov), for active speakers.
    let level = d.published.last().unwrap().audio_level.unwrap();
    assert!((10..=20).contains(&level), "level {level}");
}

#[test]
fn the_phone_hears_the_room_mixed_in_its_codec_every_20_ms() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcma, 8, 8000), t0);
    let mut d = drained();
    let mut next = drain(&mut ep, t0, &mut d);
    ep.handle_input(
        t0,
        Input::Command(Command::Subscribe {
            slot: SlotId(1),
            channel: Some(ChannelId(5)),
        }),
    )
    .unwrap();
    let mut encoder = opus::Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
    let mut buf = [0u8; 1500];
    for n in 0..100u32 {
        let now = t0 + FRAME * n;
        let len = encoder
            .encode(&tone(880.0, 48_000, n as usize * 960, 960), &mut buf)
            .unwrap();
        let packet = MediaPacket {
            channel: ChannelId(5),
            kind: MediaKind::Audio,
            codec: opus_info(),
            seq: u64::from(n),
            rtp_time: 960 * n,
            marker: false,
            arrival: now,
            wallclock: now,
            orientation: None,
            layer: Default::default(),
            audio_level: None,
            dependency: None,
            payload: buf[..len].into(),
        };
        ep.handle_input(now, Input::Media(&packet)).unwrap();
        // The phone itself sends, or the call would time out in the end.
        let keep = rtp(8, n as u16, 160 * n, &[0xd5; 160]);
        ep.handle_input(now, datagram(&keep)).unwrap();
        while next <= now {
            ep.handle_input(next, Input::Timeout).unwrap();
            next = drain(&mut ep, next, &mut d);
        }
    }
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::SlotLive(SlotId(1)))));
    // One packet per 20 ms from the start, silence before the room spoke.
    assert!(d.sent.len() >= 99, "{} packets", d.sent.len());
    let mut pcm = Vec::new();
    for (i, t) in d.sent.iter().enumerate() {
        assert_eq!(t.destination, PHONE.parse().unwrap());
        assert_eq!(t.source, LOCAL.parse().unwrap());
        let p = RtpPacket::parse(&t.contents).unwrap();
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.ssrc(), 1234);
        assert_eq!(p.payload().len(), 160);
        let first = RtpPacket::parse(&d.sent[0].contents).unwrap();
        assert_eq!(
            p.sequence_number(),
            first.sequence_number().wrapping_add(i as u16)
        );
        Law::Pcma.decode(p.payload(), &mut pcm);
    }
    let hz = dominant_hz(&pcm, 8000);
    assert!((hz - 880.0).abs() <= 5.0, "heard {hz} Hz");
}

#[test]
fn media_from_an_address_the_call_did_not_signal_is_refused() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let packet = rtp(0, 1, 0, &[0xff; 160]);
    let stranger = Input::Datagram {
        source: "192.0.2.66:4000".parse().unwrap(),
        destination: LOCAL.parse().unwrap(),
        contents: &packet,
    };
    assert!(matches!(
        ep.handle_input(t0, stranger),
        Err(InputError::Refused(_))
    ));
    assert_eq!(ep.call_stats().unsignalled, 1);
    assert_eq!(ep.call_stats().rtp_in, 0);
    // Garbage from the phone's own address is refused, not a panic.
    for junk in [&b""[..], &[0x80], &[0u8; 12], &[0xff; 40]] {
        let _ = ep.handle_input(t0, datagram(junk));
    }
    assert_eq!(ep.call_stats().rtp_in, 0);
}

#[test]
fn key_presses_become_events_once() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut d = drained();
    for (seq, end) in [(1u16, false), (2, false), (3, true), (4, true), (5, true)] {
        let packet = rtp(101, seq, 8000, &[7, if end { 0x8a } else { 0x0a }, 0, 160]);
        ep.handle_input(t0, datagram(&packet)).unwrap();
        drain(&mut ep, t0, &mut d);
    }
    let digits: Vec<char> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(digits, vec!['7']);
}

#[test]
fn silence_from_the_phone_ends_the_call_but_hold_does_not() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut d = drained();
    let late = t0 + Duration::from_secs(31);
    ep.handle_input(late, Input::Timeout).unwrap();
    drain(&mut ep, late, &mut d);
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::Closed(CloseReason::ConsentExpired))));

    let mut held = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut on_hold = held.media().clone();
    on_hold.on_hold = true;
    on_hold.direction = Direction::RecvOnly;
    held.signal(t0, &media_signal(&on_hold)).unwrap();
    assert!(held.media().on_hold);
    let mut d = drained();
    for s in 1..=40 {
        let now = t0 + Duration::from_secs(s);
        held.handle_input(now, Input::Timeout).unwrap();
        drain(&mut held, now, &mut d);
    }
    assert!(!held.is_closed());
    assert!(
        d.sent.is_empty(),
        "nothing is sent to a phone that holds the call"
    );
}

#[test]
fn media_signals_read_back() {
    let m = media(CodecName::Pcmu, 0, 8000);
    let mut changed = m.clone();
    changed.remote = None;
    changed.direction = Direction::Inactive;
    changed.on_hold = true;
    assert_eq!(parse_media_signal(&media_signal(&changed), &m), Ok(changed));
    assert_eq!(parse_media_signal(&media_signal(&m), &m), Ok(m.clone()));
    // A codec change is taken, within the rate or across.
    let mut pcma = m.clone();
    pcma.codec.name = CodecName::Pcma;
    pcma.codec.pt = 8;
    assert_eq!(
        parse_media_signal(&media_signal(&pcma), &m),
        Ok(pcma.clone())
    );
    let t0 = Instant::now();
    let mut ep = call(m.clone(), t0);
    ep.signal(t0, &media_signal(&pcma)).unwrap();
    assert_eq!(ep.media().codec.pt, 8);
    let mut opus = m.clone();
    opus.codec.name = CodecName::Opus;
    opus.codec.pt = 111;
    ep.signal(t0, &media_signal(&opus)).unwrap();
    assert_eq!(ep.media().codec.name, CodecName::Opus);
    assert!(parse_media_signal("remote=nowhere", &m).is_err());
    assert!(parse_media_signal("codec=G729/18", &m).is_err());
    assert!(parse_media_signal("hold=2", &m).is_err());
    assert!(parse_media_signal("color=red", &m).is_err());
}

#[test]
fn a_reinvite_from_g711_to_opus_changes_what_the_phone_hears() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut d = drained();
    let mut next = drain(&mut ep, t0, &mut d);
    let mut opus = media(CodecName::Pcmu, 0, 8000);
    opus.codec = SdpCodec {
        name: CodecName::Opus,
        pt: 111,
        clock_rate: 48_000,
        channels: 2,
        fmtp: None,
    };
    let mut now = t0;
    for n in 0..100u32 {
        now = t0 + FRAME * n;
        if n == 50 {
            ep.signal(now, &media_signal(&opus)).unwrap();
        }
        while next <= now {
            ep.handle_input(next, Input::Timeout).unwrap();
            next = drain(&mut ep, next, &mut d);
        }
    }
    let _ = now;
    let pts: Vec<u8> = d
        .sent
        .iter()
        .map(|t| RtpPacket::parse(&t.contents).unwrap().payload_type())
        .collect();
    assert!(pts.len() >= 95, "{} packets", pts.len());
    assert!(pts[..45].iter().all(|&p| p == 0), "PCMU first");
    assert!(
        pts[55..].iter().all(|&p| p == 111),
        "Opus after the re-INVITE"
    );
    // The Opus packets decode (silence: nobody speaks).
    let mut dec = opus::Decoder::new(48_000, Channels::Mono).unwrap();
    let mut buf = vec![0i16; MAX_OPUS_SAMPLES];
    let last = RtpPacket::parse(&d.sent.last().unwrap().contents)
        .unwrap()
        .payload()
        .to_vec();
    assert_eq!(dec.decode(&last, &mut buf, false).unwrap(), 960);
}

#[test]
fn sender_reports_go_to_the_rtcp_port_and_phone_rtcp_is_taken() {
    let t0 = Instant::now();
    let mut ep = call(media(CodecName::Pcmu, 0, 8000), t0);
    let mut d = drained();
    let mut next = drain(&mut ep, t0, &mut d);
    while next <= t0 + Duration::from_secs(11) {
        ep.handle_input(next, Input::Timeout).unwrap();
        next = drain(&mut ep, next, &mut d);
    }
    let reports: Vec<&Transmit> = d
        .sent
        .iter()
        .filter(|t| t.source == RTCP.parse().unwrap())
        .collect();
    assert_eq!(reports.len(), 2, "one every 5 s");
    for r in &reports {
        assert_eq!(r.destination, "192.0.2.7:4001".parse().unwrap());
        assert!(crate::rtcp::is_compound(&r.contents));
        assert_eq!(r.contents[1], 200);
    }
    // The phone's receiver report is taken; a stranger's is not.
    let rr = [
        0x81, 201, 0, 7, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ];
    let from_phone = Input::Datagram {
        source: "192.0.2.7:4001".parse().unwrap(),
        destination: RTCP.parse().unwrap(),
        contents: &rr,
    };
    assert_eq!(ep.handle_input(next, from_phone), Ok(false));
    let stranger = Input::Datagram {
        source: "192.0.2.99:4001".parse().unwrap(),
        destination: RTCP.parse().unwrap(),
        contents: &rr,
    };
    assert!(ep.handle_input(next, stranger).is_err());
    assert_eq!(ep.call_stats().rtcp_in, 1);
    assert_eq!(ep.call_stats().rtcp_out, 2);
}

#[test]
fn a_phones_opus_is_passed_through_to_the_room() {
    let t0 = Instant::now();
    let mut m = media(CodecName::Pcmu, 0, 8000);
    m.codec = SdpCodec {
        name: CodecName::Opus,
        pt: 111,
        clock_rate: 48_000,
        channels: 2,
        fmtp: None,
    };
    let mut ep = call(m, t0);
    let mut d = drained();
    let mut next = drain(&mut ep, t0, &mut d);
    let mut enc = opus::Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
    let mut sent = Vec::new();
    for n in 0..50u16 {
        let now = t0 + FRAME * u32::from(n);
        let mut buf = [0u8; 1500];
        let len = enc
            .encode(&tone(440.0, 48_000, usize::from(n) * 960, 960), &mut buf)
            .unwrap();
        sent.push(buf[..len].to_vec());
        let packet = rtp(111, n, 960 * u32::from(n), &buf[..len]);
        ep.handle_input(now, datagram(&packet)).unwrap();
        while next <= now {
            ep.handle_input(next, Input::Timeout).unwrap();
            next = drain(&mut ep, next, &mut d);
        }
    }
    assert!(d.published.len() >= 40, "{} packets", d.published.len());
    // Bit for bit what the phone sent, in order, 960 samples apart.
    let first = sent
        .iter()
        .position(|p| p.as_slice() == &*d.published[0].payload)
        .expect("the phone's packet");
    for (i, p) in d.published.iter().enumerate() {
        assert_eq!(&*p.payload, sent[first + i].as_slice());
        assert_eq!(
            p.rtp_time.wrapping_sub(d.published[0].rtp_time),
            960 * i as u32
        );
        assert!(p.audio_level.is_some_and(|l| l < 40), "a tone's level");
    }
}
