//! SDP offer/answer for a phone call (RFC 3264 over RFC 4566), audio only:
//! parsing a phone's offer or answer, choosing a codec, building our answer
//! or our offer, and describing the media both sides agreed on.
//!
//! The parser is a small line parser written here rather than
//! `ezk-sdp-types`: a call needs a narrow subset (the connection address,
//! the audio m-line, `rtpmap`, `fmtp`, `ptime`, the direction, `rtcp`), and
//! a parser of our own lets every limit (body size, m-lines, attributes,
//! formats) be checked while reading, keeps unknown lines and attributes
//! (ICE, crypto, `rtcp-fb`, ...) skipped rather than refused, and adds no
//! dependency. It accepts CRLF or bare LF line ends and blank lines, needs
//! `v=0` first, and refuses what it reads and does not understand with a
//! reason ([`SdpError`]).
//!
//! Hold is read both ways phones signal it: a direction of `sendonly` or
//! `inactive` (RFC 3264 §8.4), or the older `c=IN IP4 0.0.0.0` form
//! (RFC 2543). Non-audio m-lines, further audio m-lines and audio over a
//! profile we do not speak (SRTP's `RTP/SAVP`) are answered with port 0.
//!
//! Sans-IO: bytes in, text and a [`NegotiatedMedia`] out. The session id of
//! `o=` comes from the caller, and [`SdpSession`] counts its version.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The largest SDP body accepted, in bytes: 8 KiB (as a SIP datagram).
pub const MAX_SDP_LEN: usize = 8 * 1024;

/// The most m-lines accepted in one body.
pub const MAX_MEDIA: usize = 8;

/// The most `a=` lines accepted in one body, session and media levels
/// together.
pub const MAX_ATTRIBUTES: usize = 128;

/// The most formats (payload types) accepted on one m-line.
pub const MAX_FORMATS: usize = 32;

/// The packet time we ask for and send, in milliseconds.
pub const PTIME_MS: u32 = 20;

/// The payload type of Opus in our offer (dynamic; RFC 7587).
pub const OFFER_OPUS_PT: u8 = 111;

/// The payload type of `telephone-event/8000` in our offer (RFC 4733).
pub const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// The Opus format parameters we declare for what we receive: in-band FEC
/// and 10 ms frames allowed, as WebRTC senders use them.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// The default codec preference: Opus first (the phone's Opus is passed
/// through to the room; the room's mix is encoded for it), then PCMU, then
/// PCMA.
pub const DEFAULT_PREFERENCE: &[CodecName] = &[CodecName::Opus, CodecName::Pcmu, CodecName::Pcma];

/// Why an SDP body was refused, or why no media could be agreed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Larger than [`MAX_SDP_LEN`]; refused unread.
    #[error("SDP of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The size of the body.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More m-lines, attributes or formats than the limits allow.
    #[error("SDP has too many {0}")]
    TooMany(&'static str),
    /// A line we read does not follow RFC 4566.
    #[error("malformed SDP line {line}: {reason}")]
    Malformed {
        /// The line number, from 1 (0: the body as a whole).
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Well formed, but something we cannot use (a host name instead of an
    /// address, a network type other than `IN`).
    #[error("unsupported SDP: {0}")]
    Unsupported(&'static str),
    /// No audio m-line to use, or none of its codecs is one we take.
    #[error("no common audio codec")]
    NoCommonCodec,
}

impl SdpError {
    /// The SIP status a UAS answers an INVITE with for this error: 488 Not
    /// Acceptable Here when the SDP is sound but nothing in it is usable,
    /// 400 Bad Request when it is malformed or over a limit.
    pub fn status(&self) -> u16 {
        match self {
            SdpError::NoCommonCodec | SdpError::Unsupported(_) => 488,
            SdpError::TooLarge { .. } | SdpError::TooMany(_) | SdpError::Malformed { .. } => 400,
        }
    }
}

/// A media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default when no attribute is given).
    #[default]
    SendRecv,
    /// Only sends.
    SendOnly,
    /// Only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The attribute name, as written after `a=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction seen from the other side: `sendonly` ↔ `recvonly`,
    /// `sendrecv` and `inactive` unchanged (what an answer mirrors).
    pub fn mirror(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The directions both allow: a side sends only if both say so.
    fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// An `a=rtpmap` (RFC 4566 §6), or the static mapping of payload types 0
/// and 8 (RFC 3551).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    /// The payload type.
    pub pt: u8,
    /// The encoding name as written (`PCMU`, `opus`, ...).
    pub encoding: String,
    /// The RTP clock rate, in Hz.
    pub clock_rate: u32,
    /// The channel count (1 when not written).
    pub channels: u8,
}

/// The `o=` line (RFC 4566 §5.2), as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name (`-` when none).
    pub username: String,
    /// The session id.
    pub session_id: String,
    /// The session version; a re-offer that changes something raises it.
    pub version: String,
    /// The address the session was created from, as written.
    pub address: String,
}

/// One m-line with what it carries (RFC 4566 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type (`audio`, `video`, `application`, ...).
    pub media: String,
    /// The transport port (0: the stream is disabled or rejected).
    pub port: u16,
    /// The transport protocol (`RTP/AVP`, `RTP/SAVPF`, ...).
    pub proto: String,
    /// The formats as written (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// The media-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// The `a=rtpmap` lines.
    pub rtpmaps: Vec<Rtpmap>,
    /// The `a=fmtp` lines: payload type and its parameters as written.
    pub fmtps: Vec<(u8, String)>,
    /// The `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
    /// The media-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// The `a=rtcp` port (RFC 3605), if any.
    pub rtcp_port: Option<u16>,
}

impl MediaDescription {
    /// Whether this is an audio m-line over plain RTP (`RTP/AVP` or
    /// `RTP/AVPF`), the only kind we answer.
    pub fn is_rtp_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
            && (self.proto.eq_ignore_ascii_case("RTP/AVP")
                || self.proto.eq_ignore_ascii_case("RTP/AVPF"))
    }

    /// The payload types of the format list, in the offered order
    /// (formats that are not numbers are skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    /// The mapping of a payload type: its `a=rtpmap`, else the static one
    /// of PCMU (0) and PCMA (8).
    pub fn rtpmap(&self, pt: u8) -> Option<Rtpmap> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some(m.clone());
        }
        let encoding = match pt {
            0 => "PCMU",
            8 => "PCMA",
            _ => return None,
        };
        Some(Rtpmap {
            pt,
            encoding: encoding.to_owned(),
            clock_rate: 8000,
            channels: 1,
        })
    }

    /// The `a=fmtp` parameters of a payload type, if any.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, f)| f.as_str())
    }
}

/// A parsed SDP body: the session level and its m-lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line, if present.
    pub origin: Option<Origin>,
    /// The session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// The m-lines, in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body within the limits ([`MAX_SDP_LEN`],
    /// [`MAX_MEDIA`], [`MAX_ATTRIBUTES`], [`MAX_FORMATS`]).
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        parse(body)
    }

    /// The connection address of an m-line: its own `c=`, else the
    /// session's.
    pub fn connection_of(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// The direction of an m-line: its own attribute, else the session's,
    /// else `sendrecv`.
    pub fn direction_of(&self, media: &MediaDescription) -> Direction {
        media.direction.or(self.direction).unwrap_or_default()
    }

    /// The index of the m-line a call uses: the first plain-RTP audio
    /// m-line with a port.
    pub fn audio_index(&self) -> Option<usize> {
        self.media
            .iter()
            .position(|m| m.is_rtp_audio() && m.port != 0)
    }
}

/// The codecs we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecName {
    /// G.711 μ-law, 8000 Hz mono.
    Pcmu,
    /// G.711 A-law, 8000 Hz mono.
    Pcma,
    /// Opus, RTP clock 48000 Hz, 2 channels in SDP (RFC 7587).
    Opus,
}

impl CodecName {
    /// The encoding name written in `a=rtpmap`.
    pub fn encoding(self) -> &'static str {
        match self {
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
            CodecName::Opus => "opus",
        }
    }

    /// The RTP clock rate, in Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecName::Pcmu | CodecName::Pcma => 8000,
            CodecName::Opus => 48000,
        }
    }

    /// The channel count written in `a=rtpmap`.
    pub fn channels(self) -> u8 {
        match self {
            CodecName::Pcmu | CodecName::Pcma => 1,
            CodecName::Opus => 2,
        }
    }

    /// The payload type we use in our offer.
    fn offer_pt(self) -> u8 {
        match self {
            CodecName::Pcmu => 0,
            CodecName::Pcma => 8,
            CodecName::Opus => OFFER_OPUS_PT,
        }
    }

    /// Which of ours a mapping is, if any (names compare without case).
    fn of(map: &Rtpmap) -> Option<CodecName> {
        [CodecName::Pcmu, CodecName::Pcma, CodecName::Opus]
            .into_iter()
            .find(|c| {
                map.encoding.eq_ignore_ascii_case(c.encoding())
                    && map.clock_rate == c.clock_rate()
                    && map.channels == c.channels()
            })
    }
}

/// The codec agreed for a call, numbered as the phone numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Which codec.
    pub name: CodecName,
    /// The payload type.
    pub pt: u8,
    /// The RTP clock rate, in Hz.
    pub clock_rate: u32,
    /// The channel count from SDP.
    pub channels: u8,
    /// The phone's `a=fmtp` parameters for it, as written (for Opus,
    /// `useinbandfec`, `stereo`, ...).
    pub fmtp: Option<String>,
}

/// The RFC 4733 `telephone-event` payload agreed for DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The payload type.
    pub pt: u8,
    /// Its clock rate, in Hz.
    pub clock_rate: u32,
}

/// The media a call agreed on, from our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP; `None` when the phone gave address 0.0.0.0 (or
    /// `::`) or port 0: send nothing.
    pub remote: Option<SocketAddr>,
    /// Where to send RTCP: the `a=rtcp` port, else the RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// The codec.
    pub codec: Codec,
    /// The DTMF payload, when both sides have it.
    pub telephone_event: Option<TelephoneEvent>,
    /// The packet time the phone asked for (`a=ptime`), in milliseconds.
    pub remote_ptime: Option<u32>,
    /// Our direction: whether we send and receive.
    pub direction: Direction,
    /// Whether the phone put the call on hold (`sendonly`, `inactive`, or
    /// address 0.0.0.0).
    pub on_hold: bool,
}

impl NegotiatedMedia {
    /// Whether to send RTP at all: our direction sends and the phone gave
    /// an address.
    pub fn sends(&self) -> bool {
        self.direction.sends() && self.remote.is_some()
    }
}

/// Where we receive media: the address written in `o=` and `c=`, and the
/// RTP port of the m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// Our media address (its family should match the phone's).
    pub address: IpAddr,
    /// Our RTP port.
    pub rtp_port: u16,
}

/// Our answer to an offer: the SDP body, and the media agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer body (CRLF line ends), for `application/sdp`.
    pub sdp: String,
    /// The media agreed.
    pub media: NegotiatedMedia,
}

/// Our side of one call's SDP: the `o=` session id and version, which goes
/// up by one with every body we write (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpSession {
    session_id: u64,
    version: u64,
    offered: Vec<CodecName>,
}

impl SdpSession {
    /// A session with this id (the caller draws it at random); the first
    /// body written has version 1.
    pub fn new(session_id: u64) -> SdpSession {
        SdpSession {
            session_id,
            version: 0,
            offered: Vec::new(),
        }
    }

    /// The session id written in `o=`.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last body written (0 before the first).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answers a phone's offer (an INVITE's or re-INVITE's body): picks
    /// the first codec of `preference` the audio m-line offers, mirrors the
    /// direction and rejects the other m-lines with port 0. On error
    /// nothing changes; answer with [`SdpError::status`].
    pub fn answer(
        &mut self,
        offer: &[u8],
        local: &LocalMedia,
        preference: &[CodecName],
    ) -> Result<Answer, SdpError> {
        let sd = SessionDescription::parse(offer)?;
        let index = sd.audio_index().ok_or(SdpError::NoCommonCodec)?;
        let audio = &sd.media[index];
        let codec = preference
            .iter()
            .find_map(|want| find_codec(audio, *want))
            .ok_or(SdpError::NoCommonCodec)?;
        let telephone_event = find_telephone_event(audio, codec.clock_rate);
        let offered = sd.direction_of(audio);
        let media = negotiated(&sd, audio, codec, telephone_event, offered.mirror())?;

        self.version = self.version.wrapping_add(1);
        let mut out = self.head(local);
        for (i, m) in sd.media.iter().enumerate() {
            if i != index {
                write_rejected(&mut out, m);
                continue;
            }
            let mut pts = vec![media.codec.pt];
            pts.extend(media.telephone_event.map(|t| t.pt));
            write_m_line(&mut out, local.rtp_port, &m.proto, &pts);
            let fmtp = (media.codec.name == CodecName::Opus).then_some(OPUS_FMTP);
            write_codec(&mut out, media.codec.name, media.codec.pt, fmtp);
            if let Some(te) = media.telephone_event {
                write_telephone_event(&mut out, te);
            }
            line(&mut out, format_args!("a=ptime:{PTIME_MS}"));
            line(&mut out, format_args!("a={}", media.direction.as_str()));
        }
        Ok(Answer { sdp: out, media })
    }

    /// Our offer for a call out (or a re-INVITE): one `sendrecv` audio
    /// m-line with the codecs of `preference` in that order (PCMU 0,
    /// PCMA 8, Opus 111) and `telephone-event/8000` (101).
    pub fn offer(&mut self, local: &LocalMedia, preference: &[CodecName]) -> String {
        self.version = self.version.wrapping_add(1);
        self.offered.clear();
        for c in preference {
            if !self.offered.contains(c) {
                self.offered.push(*c);
            }
        }
        let mut out = self.head(local);
        let mut pts: Vec<u8> = self.offered.iter().map(|c| c.offer_pt()).collect();
        pts.push(OFFER_TELEPHONE_EVENT_PT);
        write_m_line(&mut out, local.rtp_port, "RTP/AVP", &pts);
        for c in &self.offered {
            let fmtp = (*c == CodecName::Opus).then_some(OPUS_FMTP);
            write_codec(&mut out, *c, c.offer_pt(), fmtp);
        }
        write_telephone_event(
            &mut out,
            TelephoneEvent {
                pt: OFFER_TELEPHONE_EVENT_PT,
                clock_rate: 8000,
            },
        );
        line(&mut out, format_args!("a=ptime:{PTIME_MS}"));
        line(&mut out, format_args!("a={}", Direction::SendRecv.as_str()));
        out
    }

    /// Applies a phone's answer to our last [`offer`](Self::offer): the
    /// codec is the first of the answer's formats that we offered; the
    /// answer's direction is mirrored onto ours (`sendrecv`).
    pub fn apply_answer(&self, answer: &[u8]) -> Result<NegotiatedMedia, SdpError> {
        let sd = SessionDescription::parse(answer)?;
        let index = sd.audio_index().ok_or(SdpError::NoCommonCodec)?;
        let audio = &sd.media[index];
        let codec = audio
            .payload_types()
            .find_map(|pt| {
                let map = audio.rtpmap(pt).or_else(|| self.offered_map(pt))?;
                let name = CodecName::of(&map).filter(|n| self.offered.contains(n))?;
                Some(codec_of(audio, name, &map))
            })
            .ok_or(SdpError::NoCommonCodec)?;
        let telephone_event = find_telephone_event(audio, codec.clock_rate).or_else(|| {
            let te = audio
                .payload_types()
                .any(|pt| pt == OFFER_TELEPHONE_EVENT_PT && audio.rtpmap(pt).is_none());
            te.then_some(TelephoneEvent {
                pt: OFFER_TELEPHONE_EVENT_PT,
                clock_rate: 8000,
            })
        });
        let ours = Direction::SendRecv.intersect(sd.direction_of(audio).mirror());
        negotiated(&sd, audio, codec, telephone_event, ours)
    }

    /// Our mapping of a payload type we offered, for answers that leave out
    /// `a=rtpmap`.
    fn offered_map(&self, pt: u8) -> Option<Rtpmap> {
        let c = self.offered.iter().find(|c| c.offer_pt() == pt)?;
        Some(Rtpmap {
            pt,
            encoding: c.encoding().to_owned(),
            clock_rate: c.clock_rate(),
            channels: c.channels(),
        })
    }

    /// `v=`, `o=`, `s=`, `c=` and `t=`.
    fn head(&self, local: &LocalMedia) -> String {
        let mut out = String::with_capacity(512);
        let (kind, addr) = address(local.address);
        line(&mut out, format_args!("v=0"));
        line(
            &mut out,
            format_args!(
                "o=corecast {} {} IN {kind} {addr}",
                self.session_id, self.version
            ),
        );
        line(&mut out, format_args!("s=corecast"));
        line(&mut out, format_args!("c=IN {kind} {addr}"));
        line(&mut out, format_args!("t=0 0"));
        out
    }
}

/// The first payload type of the m-line that maps to `want`.
fn find_codec(audio: &MediaDescription, want: CodecName) -> Option<Codec> {
    audio.payload_types().find_map(|pt| {
        let map = audio.rtpmap(pt)?;
        (CodecName::of(&map) == Some(want)).then(|| codec_of(audio, want, &map))
    })
}

fn codec_of(audio: &MediaDescription, name: CodecName, map: &Rtpmap) -> Codec {
    Codec {
        name,
        pt: map.pt,
        clock_rate: map.clock_rate,
        channels: map.channels,
        fmtp: audio.fmtp(map.pt).map(str::to_owned),
    }
}

/// The `telephone-event` payload of the m-line: the one at the codec's
/// clock rate, else the one at 8000 Hz.
fn find_telephone_event(audio: &MediaDescription, clock_rate: u32) -> Option<TelephoneEvent> {
    let events: Vec<TelephoneEvent> = audio
        .payload_types()
        .filter_map(|pt| audio.rtpmap(pt))
        .filter(|m| m.encoding.eq_ignore_ascii_case("telephone-event"))
        .map(|m| TelephoneEvent {
            pt: m.pt,
            clock_rate: m.clock_rate,
        })
        .collect();
    let at = |rate: u32| events.iter().copied().find(|t| t.clock_rate == rate);
    at(clock_rate).or_else(|| at(8000))
}

fn negotiated(
    sd: &SessionDescription,
    audio: &MediaDescription,
    codec: Codec,
    telephone_event: Option<TelephoneEvent>,
    direction: Direction,
) -> Result<NegotiatedMedia, SdpError> {
    let ip = sd.connection_of(audio).ok_or(SdpError::Malformed {
        line: 0,
        reason: "no connection address for the audio m-line",
    })?;
    let theirs = sd.direction_of(audio);
    let on_hold =
        ip.is_unspecified() || matches!(theirs, Direction::SendOnly | Direction::Inactive);
    let remote = (!ip.is_unspecified() && audio.port != 0).then(|| SocketAddr::new(ip, audio.port));
    let rtcp_port = audio.rtcp_port.or_else(|| audio.port.checked_add(1));
    let remote_rtcp = remote.and_then(|r| rtcp_port.map(|p| SocketAddr::new(r.ip(), p)));
    Ok(NegotiatedMedia {
        remote,
        remote_rtcp,
        codec,
        telephone_event,
        remote_ptime: audio.ptime,
        direction,
        on_hold,
    })
}

fn address(ip: IpAddr) -> (&'static str, String) {
    match ip {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

fn write_m_line(out: &mut String, port: u16, proto: &str, pts: &[u8]) {
    let _ = write!(out, "m=audio {port} {proto}");
    for pt in pts {
        let _ = write!(out, " {pt}");
    }
    out.push_str("\r\n");
}

fn write_rejected(out: &mut String, m: &MediaDescription) {
    let _ = write!(out, "m={} 0 {}", m.media, m.proto);
    for f in &m.formats {
        let _ = write!(out, " {f}");
    }
    out.push_str("\r\n");
}

fn write_codec(out: &mut String, name: CodecName, pt: u8, fmtp: Option<&str>) {
    let _ = write!(
        out,
        "a=rtpmap:{pt} {}/{}",
        name.encoding(),
        name.clock_rate()
    );
    if name.channels() != 1 {
        let _ = write!(out, "/{}", name.channels());
    }
    out.push_str("\r\n");
    if let Some(f) = fmtp {
        line(out, format_args!("a=fmtp:{pt} {f}"));
    }
}

fn write_telephone_event(out: &mut String, te: TelephoneEvent) {
    line(
        out,
        format_args!("a=rtpmap:{} telephone-event/{}", te.pt, te.clock_rate),
    );
    line(out, format_args!("a=fmtp:{} 0-16", te.pt));
}

// ---------------------------------------------------------------------------
// The parser.

fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge {
            len: body.len(),
            max: MAX_SDP_LEN,
        });
    }
    let mut sd = SessionDescription {
        origin: None,
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut attributes = 0usize;
    let mut seen_version = false;
    for (n, raw) in body.split(|b| *b == b'\n').enumerate() {
        let n = n + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let bad = |reason| SdpError::Malformed { line: n, reason };
        let (kind, value) = match raw {
            [k, b'=', rest @ ..] if k.is_ascii_lowercase() => (*k, rest),
            _ => return Err(bad("not a type=value line")),
        };
        if !seen_version {
            if kind != b'v' || value != b"0" {
                return Err(bad("the first line must be v=0"));
            }
            seen_version = true;
            continue;
        }
        if !matches!(kind, b'o' | b'c' | b'm' | b'a') {
            // s=, i=, t=, b=, ...: not needed, and may be in any charset.
            continue;
        }
        let value = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
        match kind {
            b'o' if sd.media.is_empty() => {
                sd.origin = Some(parse_origin(value).ok_or(bad("bad o= line"))?)
            }
            b'c' => {
                let ip = parse_connection(value).map_err(|e| e.at(n))?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => sd.connection = Some(ip),
                }
            }
            b'm' => {
                if sd.media.len() == MAX_MEDIA {
                    return Err(SdpError::TooMany("m-lines"));
                }
                sd.media.push(parse_m_line(value).map_err(|e| e.at(n))?);
            }
            b'a' => {
                attributes += 1;
                if attributes > MAX_ATTRIBUTES {
                    return Err(SdpError::TooMany("attributes"));
                }
                parse_attribute(&mut sd, value).map_err(|e| e.at(n))?;
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::Malformed {
            line: 1,
            reason: "empty body",
        });
    }
    Ok(sd)
}

/// An error found inside one line, before its number is known.
enum LineError {
    Malformed(&'static str),
    Unsupported(&'static str),
    TooMany(&'static str),
}

impl LineError {
    fn at(self, line: usize) -> SdpError {
        match self {
            LineError::Malformed(reason) => SdpError::Malformed { line, reason },
            LineError::Unsupported(what) => SdpError::Unsupported(what),
            LineError::TooMany(what) => SdpError::TooMany(what),
        }
    }
}

fn parse_origin(value: &str) -> Option<Origin> {
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    match t.as_slice() {
        [user, id, version, _net, _kind, addr] => Some(Origin {
            username: (*user).to_owned(),
            session_id: (*id).to_owned(),
            version: (*version).to_owned(),
            address: (*addr).to_owned(),
        }),
        _ => None,
    }
}

/// `IN IP4 <addr>[/ttl[/n]]` or `IN IP6 <addr>[/n]`.
fn parse_connection(value: &str) -> Result<IpAddr, LineError> {
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net, kind, addr] = t.as_slice() else {
        return Err(LineError::Malformed("bad c= line"));
    };
    if *net != "IN" {
        return Err(LineError::Unsupported("network type other than IN"));
    }
    let addr = addr.split('/').next().unwrap_or_default();
    let parsed = match *kind {
        "IP4" => addr.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
        "IP6" => addr.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
        _ => return Err(LineError::Malformed("address type is not IP4 or IP6")),
    };
    match parsed {
        Some(ip) => Ok(ip),
        None if addr
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit()) =>
        {
            Err(LineError::Unsupported("host name as connection address"))
        }
        None => Err(LineError::Malformed("bad connection address")),
    }
}

/// `<media> <port>[/<count>] <proto> <fmt> ...`.
fn parse_m_line(value: &str) -> Result<MediaDescription, LineError> {
    let mut t = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (t.next(), t.next(), t.next()) else {
        return Err(LineError::Malformed("bad m= line"));
    };
    let port = port
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or(LineError::Malformed("bad m= port"))?;
    let mut formats = Vec::new();
    for f in t {
        if formats.len() == MAX_FORMATS {
            return Err(LineError::TooMany("formats on an m-line"));
        }
        formats.push(f.to_owned());
    }
    if formats.is_empty() {
        return Err(LineError::Malformed("m= line without formats"));
    }
    let m = MediaDescription {
        media: media.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        rtcp_port: None,
    };
    if m.proto.to_ascii_uppercase().starts_with("RTP/")
        && m.formats
            .iter()
            .any(|f| f.parse::<u8>().map_or(true, |pt| pt > 127))
    {
        return Err(LineError::Malformed("RTP format is not a payload type"));
    }
    Ok(m)
}

fn parse_attribute(sd: &mut SessionDescription, value: &str) -> Result<(), LineError> {
    let (name, arg) = match value.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (value, None),
    };
    if let Some(d) = Direction::from_attribute(name) {
        match sd.media.last_mut() {
            Some(m) => m.direction = Some(d),
            None => sd.direction = Some(d),
        }
        return Ok(());
    }
    let (Some(m), Some(arg)) = (sd.media.last_mut(), arg) else {
        return Ok(());
    };
    match name {
        "rtpmap" => {
            let map = parse_rtpmap(arg).ok_or(LineError::Malformed("bad a=rtpmap"))?;
            if !m.rtpmaps.iter().any(|r| r.pt == map.pt) {
                m.rtpmaps.push(map);
            }
        }
        "fmtp" => {
            let (pt, params) = arg.split_once(' ').unwrap_or((arg, ""));
            // Formats that are not payload types (non-RTP m-lines) are not
            // ours to read.
            if let Ok(pt) = pt.parse::<u8>() {
                if !m.fmtps.iter().any(|(p, _)| *p == pt) {
                    m.fmtps.push((pt, params.trim().to_owned()));
                }
            }
        }
        // Integer milliseconds; anything else is left unread.
        "ptime" => m.ptime = arg.trim().parse::<u32>().ok(),
        "rtcp" => {
            let port = arg.split_ascii_whitespace().next().unwrap_or_default();
            m.rtcp_port = Some(
                port.parse::<u16>()
                    .map_err(|_| LineError::Malformed("bad a=rtcp port"))?,
            );
        }
        _ => {}
    }
    Ok(())
}

/// `<pt> <encoding>/<clock rate>[/<channels>]`.
fn parse_rtpmap(arg: &str) -> Option<Rtpmap> {
    let (pt, rest) = arg.split_once(' ')?;
    let pt = pt.parse::<u8>().ok().filter(|pt| *pt <= 127)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse::<u32>().ok().filter(|r| *r > 0)?;
    let channels = match parts.next() {
        Some(c) => c.parse::<u8>().ok().filter(|c| *c > 0)?,
        None => 1,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Rtpmap {
        pt,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIPp's `uac_pcap` scenario: PCMU and telephone-event, no rtpmap
    /// for 0.
    const SIPP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-11,16\r\n";

    /// baresip: Opus with fmtp, PCMU, PCMA (static, no rtpmap), two
    /// telephone-events, a=rtcp, RTP/AVP.
    const BARESIP: &str = "v=0\r\n\
o=- 1470215406 1817862938 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 10560 RTP/AVP 96 0 8 101 102\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/48000\r\n\
a=fmtp:101 0-15\r\n\
a=rtpmap:102 telephone-event/8000\r\n\
a=fmtp:102 0-15\r\n\
a=rtcp:10561\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:2838713924 cname:2a77b1cf-64d7-4c6c-9d9f-5e4b2b2d8d2e\r\n\
a=ptime:20\r\n";

    /// linphone over IPv6: media-level c=, a video m-line, ICE attributes,
    /// speex and G.722 before PCMA, session-level direction.
    const LINPHONE_V6: &str = "v=0\n\
o=alice 2466 1049 IN IP6 2001:db8::5\n\
s=Talk\n\
c=IN IP6 2001:db8::1\n\
t=0 0\n\
a=sendrecv\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\n\
m=audio 7078 RTP/AVP 96 97 9 8 101\n\
c=IN IP6 2001:db8::7\n\
a=rtpmap:96 speex/16000\n\
a=fmtp:96 vbr=on\n\
a=rtpmap:97 speex/8000\n\
a=rtpmap:9 G722/8000\n\
a=rtpmap:101 telephone-event/8000\n\
a=candidate:1 1 UDP 2130706431 2001:db8::7 7078 typ host\n\
a=rtcp-fb:* trr-int 1000\n\
m=video 9078 RTP/AVPF 96 97\n\
a=rtpmap:96 VP8/90000\n\
a=rtpmap:97 H264/90000\n\
a=fmtp:97 profile-level-id=42801F\n";

    /// A phone that only has G.729.
    const G729: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.30\r\n\
s=-\r\n\
c=IN IP4 192.0.2.30\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 18 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            address: "203.0.113.5".parse().expect("ip"),
            rtp_port: 30000,
        }
    }

    fn answer(offer: &str, pref: &[CodecName]) -> Result<Answer, SdpError> {
        SdpSession::new(42).answer(offer.as_bytes(), &local(), pref)
    }

    fn lines(sdp: &str) -> Vec<&str> {
        sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn sipp_offer_answered_with_pcmu_and_exact_lines() {
        let a = answer(SIPP, DEFAULT_PREFERENCE).expect("answer");
        assert_eq!(
            lines(&a.sdp),
            [
                "v=0",
                "o=corecast 42 1 IN IP4 203.0.113.5",
                "s=corecast",
                "c=IN IP4 203.0.113.5",
                "t=0 0",
                "m=audio 30000 RTP/AVP 0 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
        assert!(a.sdp.ends_with("\r\n"));
        let m = a.media;
        assert_eq!(m.remote, Some("192.0.2.10:6000".parse().expect("addr")));
        assert_eq!(
            m.remote_rtcp,
            Some("192.0.2.10:6001".parse().expect("addr"))
        );
        assert_eq!(
            m.codec,
            Codec {
                name: CodecName::Pcmu,
                pt: 0,
                clock_rate: 8000,
                channels: 1,
                fmtp: None
            }
        );
        assert_eq!(
            m.telephone_event,
            Some(TelephoneEvent {
                pt: 101,
                clock_rate: 8000
            })
        );
        assert_eq!(m.direction, Direction::SendRecv);
        assert!(!m.on_hold);
        assert!(m.sends());
    }

    #[test]
    fn baresip_opus_passed_through_with_fmtp() {
        let a = answer(BARESIP, DEFAULT_PREFERENCE).expect("answer");
        let m = &a.media;
        assert_eq!(m.codec.name, CodecName::Opus);
        assert_eq!(m.codec.pt, 96);
        assert_eq!((m.codec.clock_rate, m.codec.channels), (48000, 2));
        assert_eq!(
            m.codec.fmtp.as_deref(),
            Some("stereo=1;sprop-stereo=1;useinbandfec=1")
        );
        // The telephone-event at Opus's clock rate wins.
        assert_eq!(
            m.telephone_event,
            Some(TelephoneEvent {
                pt: 101,
                clock_rate: 48000
            })
        );
        assert_eq!(m.remote_rtcp, Some("192.0.2.20:10561".parse().expect("a")));
        assert_eq!(m.remote_ptime, Some(20));
        let l = lines(&a.sdp);
        assert_eq!(
            l[5..],
            [
                "m=audio 30000 RTP/AVP 96 101",
                "a=rtpmap:96 opus/48000/2",
                "a=fmtp:96 minptime=10;useinbandfec=1",
                "a=rtpmap:101 telephone-event/48000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
    }

    #[test]
    fn preference_is_a_parameter_and_static_types_need_no_rtpmap() {
        let a = answer(BARESIP, &[CodecName::Pcma, CodecName::Pcmu]).expect("answer");
        assert_eq!(a.media.codec.name, CodecName::Pcma);
        assert_eq!(a.media.codec.pt, 8);
        // PCMA at 8000 Hz takes the 8000 Hz telephone-event.
        assert_eq!(a.media.telephone_event.map(|t| t.pt), Some(102));
        assert!(a
            .sdp
            .contains("m=audio 30000 RTP/AVP 8 102\r\na=rtpmap:8 PCMA/8000\r\n"));
        let a = answer(BARESIP, &[CodecName::Pcmu]).expect("answer");
        assert_eq!(a.media.codec.pt, 0);
    }

    #[test]
    fn linphone_ipv6_media_level_address_and_video_rejected() {
        let a = answer(LINPHONE_V6, DEFAULT_PREFERENCE).expect("answer");
        let m = &a.media;
        assert_eq!(m.codec.name, CodecName::Pcma);
        assert_eq!(m.remote, Some("[2001:db8::7]:7078".parse().expect("a")));
        assert_eq!(m.telephone_event.map(|t| t.pt), Some(101));
        let l = lines(&a.sdp);
        assert_eq!(l.last().copied(), Some("m=video 0 RTP/AVPF 96 97"));
        assert_eq!(l.iter().filter(|l| l.starts_with("m=")).count(), 2);
        let v6 = LocalMedia {
            address: "2001:db8::99".parse().expect("ip"),
            rtp_port: 30002,
        };
        let a = SdpSession::new(7)
            .answer(LINPHONE_V6.as_bytes(), &v6, DEFAULT_PREFERENCE)
            .expect("answer");
        assert!(a.sdp.contains("\r\nc=IN IP6 2001:db8::99\r\n"));
        assert!(a.sdp.contains("o=corecast 7 1 IN IP6 2001:db8::99\r\n"));
    }

    #[test]
    fn only_g729_is_no_common_codec_488() {
        let e = answer(G729, DEFAULT_PREFERENCE).expect_err("no codec");
        assert_eq!(e, SdpError::NoCommonCodec);
        assert_eq!(e.status(), 488);
        // SRTP-only audio is not ours either.
        let savp = SIPP.replace("RTP/AVP", "RTP/SAVP");
        assert_eq!(
            answer(&savp, DEFAULT_PREFERENCE),
            Err(SdpError::NoCommonCodec)
        );
        // Nor an empty preference.
        assert_eq!(answer(SIPP, &[]), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn hold_and_unhold_re_offers() {
        let mut s = SdpSession::new(1000);
        let first = s
            .answer(SIPP.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(!first.media.on_hold);
        assert!(first.sdp.contains("o=corecast 1000 1 "));

        let hold = SIPP.replace("a=fmtp:101 0-11,16", "a=fmtp:101 0-11,16\r\na=sendonly");
        let a = s
            .answer(hold.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(a.media.on_hold);
        assert_eq!(a.media.direction, Direction::RecvOnly);
        assert!(!a.media.sends());
        assert!(a.sdp.contains("\r\na=recvonly\r\n"));
        assert!(a.sdp.contains("o=corecast 1000 2 "));

        let inactive = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        let a = s
            .answer(inactive.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(a.media.on_hold);
        assert_eq!(a.media.direction, Direction::Inactive);
        assert!(a.sdp.contains("\r\na=inactive\r\n"));

        // The old form: c=0.0.0.0, no direction.
        let old = SIPP.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
        let a = s
            .answer(old.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(a.media.on_hold);
        assert_eq!(a.media.remote, None);
        assert_eq!(a.media.remote_rtcp, None);
        assert!(!a.media.sends());

        // A phone that only receives: we only send.
        let recv = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        let a = s
            .answer(recv.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(!a.media.on_hold);
        assert_eq!(a.media.direction, Direction::SendOnly);
        assert!(a.sdp.contains("\r\na=sendonly\r\n"));

        // Unhold: media level sendrecv over a session-level sendonly.
        let unhold = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n") + "a=sendrecv\r\n";
        let a = s
            .answer(unhold.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(!a.media.on_hold);
        assert!(a.media.sends());
        assert!(a.sdp.contains("o=corecast 1000 6 "));
        assert_eq!(s.version(), 6);
        assert_eq!(s.session_id(), 1000);
    }

    #[test]
    fn failed_answer_does_not_raise_the_version() {
        let mut s = SdpSession::new(5);
        assert!(s
            .answer(G729.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .is_err());
        assert_eq!(s.version(), 0);
        let a = s
            .answer(SIPP.as_bytes(), &local(), DEFAULT_PREFERENCE)
            .expect("a");
        assert!(a.sdp.contains("o=corecast 5 1 "));
    }

    #[test]
    fn offer_exact_lines_and_applying_answers() {
        let mut s = SdpSession::new(77);
        let offer = s.offer(
            &local(),
            &[CodecName::Pcmu, CodecName::Pcma, CodecName::Opus],
        );
        assert_eq!(
            lines(&offer),
            [
                "v=0",
                "o=corecast 77 1 IN IP4 203.0.113.5",
                "s=corecast",
                "c=IN IP4 203.0.113.5",
                "t=0 0",
                "m=audio 30000 RTP/AVP 0 8 111 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:111 opus/48000/2",
                "a=fmtp:111 minptime=10;useinbandfec=1",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
        // Our own offer parses.
        let sd = SessionDescription::parse(offer.as_bytes()).expect("parse");
        assert_eq!(sd.audio_index(), Some(0));

        // A phone answers PCMA without rtpmap lines and with DTMF.
        let ans = "v=0\r\no=- 9 9 IN IP4 192.0.2.40\r\ns=-\r\nc=IN IP4 192.0.2.40\r\n\
t=0 0\r\nm=audio 5004 RTP/AVP 8 101\r\na=ptime:30\r\n";
        let m = s.apply_answer(ans.as_bytes()).expect("apply");
        assert_eq!(m.codec.name, CodecName::Pcma);
        assert_eq!(m.remote, Some("192.0.2.40:5004".parse().expect("a")));
        assert_eq!(m.telephone_event.map(|t| t.pt), Some(101));
        assert_eq!(m.remote_ptime, Some(30));
        assert_eq!(m.direction, Direction::SendRecv);

        // Opus answered with the phone's fmtp; the phone only receives.
        let ans = "v=0\r\no=- 9 10 IN IP4 192.0.2.40\r\ns=-\r\nc=IN IP4 192.0.2.40\r\n\
t=0 0\r\nm=audio 5004 RTP/AVP 111\r\na=rtpmap:111 OPUS/48000/2\r\n\
a=fmtp:111 useinbandfec=1;stereo=0\r\na=recvonly\r\n";
        let m = s.apply_answer(ans.as_bytes()).expect("apply");
        assert_eq!(m.codec.name, CodecName::Opus);
        assert_eq!(m.codec.fmtp.as_deref(), Some("useinbandfec=1;stereo=0"));
        assert_eq!(m.telephone_event, None);
        assert_eq!(m.direction, Direction::SendOnly);

        // Opus by our number alone, without an rtpmap.
        let ans = "v=0\r\nc=IN IP4 192.0.2.40\r\nm=audio 5004 RTP/AVP 111\r\n";
        let m = s.apply_answer(ans.as_bytes()).expect("apply");
        assert_eq!((m.codec.name, m.codec.pt), (CodecName::Opus, 111));

        // The audio rejected, or a codec we did not offer.
        let rejected = "v=0\r\nc=IN IP4 192.0.2.40\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(
            s.apply_answer(rejected.as_bytes()),
            Err(SdpError::NoCommonCodec)
        );
        let mut only_pcmu = SdpSession::new(1);
        let _ = only_pcmu.offer(&local(), &[CodecName::Pcmu]);
        let pcma = "v=0\r\nc=IN IP4 192.0.2.40\r\nm=audio 5004 RTP/AVP 8\r\n";
        assert_eq!(
            only_pcmu.apply_answer(pcma.as_bytes()),
            Err(SdpError::NoCommonCodec)
        );

        // The version goes on from the answers written in between.
        let again = s.offer(&local(), DEFAULT_PREFERENCE);
        assert!(again.contains("o=corecast 77 2 "));
        assert!(again.contains("m=audio 30000 RTP/AVP 111 0 8 101\r\n"));
    }

    #[test]
    fn size_and_count_limits() {
        let big = format!("{SIPP}{}", "a=x\r\n".repeat(2000));
        assert!(matches!(
            SessionDescription::parse(big.as_bytes()),
            Err(SdpError::TooLarge {
                max: MAX_SDP_LEN,
                ..
            })
        ));
        let at_limit = format!("{SIPP}{}", "a=x\r\n".repeat(MAX_ATTRIBUTES - 3));
        assert!(SessionDescription::parse(at_limit.as_bytes()).is_ok());
        let over = format!("{SIPP}{}", "a=x\r\n".repeat(MAX_ATTRIBUTES - 2));
        assert_eq!(
            SessionDescription::parse(over.as_bytes()),
            Err(SdpError::TooMany("attributes"))
        );
        let media = |n: usize| format!("{SIPP}{}", "m=video 0 RTP/AVP 96\r\n".repeat(n));
        assert!(SessionDescription::parse(media(MAX_MEDIA - 1).as_bytes()).is_ok());
        let e = SessionDescription::parse(media(MAX_MEDIA).as_bytes()).expect_err("too many");
        assert_eq!(e, SdpError::TooMany("m-lines"));
        assert_eq!(e.status(), 400);
        let fmts = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!("v=0\r\nm=audio 1 RTP/AVP {}\r\n", list.join(" "))
        };
        assert!(SessionDescription::parse(fmts(MAX_FORMATS).as_bytes()).is_ok());
        assert_eq!(
            SessionDescription::parse(fmts(MAX_FORMATS + 1).as_bytes()),
            Err(SdpError::TooMany("formats on an m-line"))
        );
    }

    #[test]
    fn malformed_bodies_are_400_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty body"),
            (
                "o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
                "the first line must be v=0",
            ),
            ("v=1\r\n", "the first line must be v=0"),
            ("v=0\r\nthis is not sdp\r\n", "not a type=value line"),
            ("v=0\r\nc=IN IP4 300.1.1.1\r\n", "bad connection address"),
            ("v=0\r\nc=IN IP4\r\n", "bad c= line"),
            (
                "v=0\r\nc=IN IPX 1.2.3.4\r\n",
                "address type is not IP4 or IP6",
            ),
            ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "bad m= port"),
            ("v=0\r\nm=audio 4000 RTP/AVP\r\n", "m= line without formats"),
            (
                "v=0\r\nm=audio 4000 RTP/AVP 0 200\r\n",
                "RTP format is not a payload type",
            ),
            (
                "v=0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n",
                "bad a=rtpmap",
            ),
            (
                "v=0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 x/0\r\n",
                "bad a=rtpmap",
            ),
            (
                "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n",
                "bad a=rtcp port",
            ),
            ("v=0\r\no=- 1\r\n", "bad o= line"),
        ];
        for (body, want) in cases {
            match SessionDescription::parse(body.as_bytes()) {
                Err(e @ SdpError::Malformed { reason, .. }) => {
                    assert_eq!(reason, *want, "{body:?}");
                    assert_eq!(e.status(), 400);
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            SessionDescription::parse(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=\xff\r\n"),
            Err(SdpError::Malformed {
                line: 3,
                reason: "not UTF-8"
            })
        ));
        // Lines we do not read may be in another charset.
        assert!(SessionDescription::parse(b"v=0\r\ns=\xff\r\n").is_ok());
        let host = SIPP.replace("c=IN IP4 192.0.2.10", "c=IN IP4 phone.example.com");
        let e = answer(&host, DEFAULT_PREFERENCE).expect_err("host name");
        assert_eq!(e, SdpError::Unsupported("host name as connection address"));
        assert_eq!(e.status(), 488);
        // No c= anywhere for the audio.
        let none = SIPP.replace("c=IN IP4 192.0.2.10\r\n", "");
        assert_eq!(
            answer(&none, DEFAULT_PREFERENCE)
                .map(|_| ())
                .map_err(|e| e.status()),
            Err(400)
        );
    }

    #[test]
    fn parse_keeps_what_a_call_reads() {
        let sd = SessionDescription::parse(LINPHONE_V6.as_bytes()).expect("parse");
        let o = sd.origin.as_ref().expect("origin");
        assert_eq!(
            (o.session_id.as_str(), o.version.as_str()),
            ("2466", "1049")
        );
        assert_eq!(sd.connection, Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(sd.direction, Some(Direction::SendRecv));
        assert_eq!(sd.media.len(), 2);
        let a = &sd.media[0];
        assert_eq!(a.formats, ["96", "97", "9", "8", "101"]);
        assert_eq!(a.fmtp(96), Some("vbr=on"));
        assert_eq!(a.rtpmap(8).map(|m| m.encoding), Some("PCMA".to_owned()));
        assert_eq!(a.rtpmap(18), None);
        assert!(!sd.media[1].is_rtp_audio());
        assert_eq!(sd.connection_of(&sd.media[1]), sd.connection);
        // An a=rtcp port that is not RTP + 1 (RFC 3605).
        let rtcp = SIPP.to_owned() + "a=rtcp:6099 IN IP4 192.0.2.10\r\n";
        let a = answer(&rtcp, DEFAULT_PREFERENCE).expect("answer");
        assert_eq!(
            a.media.remote_rtcp,
            Some("192.0.2.10:6099".parse().expect("a"))
        );
        // Multicast TTL and port counts are cut off.
        let sd = SessionDescription::parse(
            b"v=0\nc=IN IP4 224.2.1.1/127/3\nm=audio 49170/2 RTP/AVP 0\n",
        )
        .expect("parse");
        assert_eq!(sd.connection, Some("224.2.1.1".parse().expect("ip")));
        assert_eq!(sd.media[0].port, 49170);
    }

    #[test]
    fn direction_mirror() {
        use Direction::*;
        for (d, m) in [
            (SendRecv, SendRecv),
            (SendOnly, RecvOnly),
            (RecvOnly, SendOnly),
            (Inactive, Inactive),
        ] {
            assert_eq!(d.mirror(), m);
        }
    }

    /// Mutations of the seeds (truncations, byte flips, line swaps) never
    /// panic, and every answer written parses back to the same codec.
    #[test]
    fn never_panics_on_mutated_seeds() {
        let seeds = [SIPP, BARESIP, LINPHONE_V6, G729];
        let mut state = 0x5d9_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut answered = 0;
        for i in 0..20_000 {
            let seed = seeds[i % seeds.len()].as_bytes();
            let mut data = seed.to_vec();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % data.len().max(1);
                match next() % 4 {
                    0 => data.truncate(at),
                    1 if !data.is_empty() => data[at] = b" \r\n=:/0a9"[(next() % 9) as usize],
                    2 if !data.is_empty() => data[at] = next() as u8,
                    _ => data.insert(at.min(data.len()), b"\n=0 /"[(next() % 5) as usize]),
                }
            }
            let mut s = SdpSession::new(next());
            if let Ok(a) = s.answer(&data, &local(), DEFAULT_PREFERENCE) {
                answered += 1;
                let back = SessionDescription::parse(a.sdp.as_bytes()).expect("answer parses");
                let idx = back.audio_index().expect("audio");
                assert_eq!(
                    back.media[idx].payload_types().next(),
                    Some(a.media.codec.pt)
                );
            }
            let _ = s.offer(&local(), DEFAULT_PREFERENCE);
            let _ = s.apply_answer(&data);
        }
        assert!(answered > 1000, "{answered}");
    }
}
