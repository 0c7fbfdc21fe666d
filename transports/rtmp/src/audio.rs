//! AAC-LC from RTMP publishers to Opus for WebRTC viewers.
//!
//! [`AacTranscoder`] takes the raw AAC access units of FLV audio tags and
//! returns 20 ms Opus packets at 48 kHz:
//!
//! 1. decode AAC-LC with Symphonia's pure-Rust decoder. It handles mono and
//!    stereo AAC-LC only, so the AudioSpecificConfig is checked first and
//!    anything else (HE-AAC announced in the config, multichannel, odd rates)
//!    is refused with a clear [`AudioError::Unsupported`]. HE-AAC whose SBR
//!    shows only inside the frames decodes as its AAC-LC core, as in any
//!    AAC-LC decoder;
//! 2. resample to 48 kHz with rubato's FFT resampler, only when the input rate
//!    differs (ffmpeg's default AAC is 44.1 kHz). Decoded audio is buffered and
//!    fed in the resampler's fixed chunks (10 ms), and the resampler's own delay
//!    is cut from its first output so that the timeline stays exact;
//! 3. encode with libopus (application Audio, 960 samples per channel,
//!    stereo when the input is stereo). It is the system's library (Debian:
//!    `libopus-dev` and `pkg-config` to build, `libopus0` to run), found
//!    with pkg-config by `audiopus_sys` and linked dynamically.
//!
//! # Timeline
//!
//! Video uses `ts_ms * 90` as its RTP time. Audio starts at the first access
//! unit's `ts_ms * 48` and then counts the samples it emits, so a packet's
//! `rtp_time` is `first_ts_ms * 48 + samples emitted before it` (wrapping
//! `u32`): consecutive packets step by exactly 960. The FLV timestamps are only
//! checked against that timeline: when one is more than [`RESYNC_MS`] away
//! from where the samples say it should be (a gap, a publisher restart, a jump
//! backwards), the buffered partial input is dropped, the decoder and the
//! resampler start afresh and the timeline restarts at the new `ts_ms * 48`.
//! Smaller jitter (FLV timestamps are rounded milliseconds) is ignored.
//!
//! An access unit that fails to decode is replaced by one frame (1024 samples)
//! of silence, so one bad frame neither kills the stream nor moves the audio
//! against the video; `push` still returns the error for the caller to count.

use opus::{Application, Bitrate, Channels, Encoder};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::{Audio, GenericAudioBufferRef};
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

/// The Opus bitrate the endpoint uses unless configured otherwise, in bit/s.
pub const DEFAULT_BITRATE: u32 = 128_000;
/// Opus's (and WebRTC's) audio clock rate, in Hz.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus packet at 48 kHz.
pub const OPUS_FRAME_SAMPLES: usize = 960;
/// How far an FLV timestamp may stray from the audio timeline, in
/// milliseconds, before the timeline restarts at it.
pub const RESYNC_MS: u32 = 100;

/// Samples per channel in one AAC-LC access unit.
const AAC_FRAME_SAMPLES: usize = 1024;
/// Room for one Opus packet: a 20 ms frame is at most 1275 bytes (RFC 6716).
const MAX_OPUS_PACKET: usize = 1500;
/// Sampling rates of the AudioSpecificConfig's 4-bit index (13 and 14 are
/// reserved, 15 means an explicit 24-bit rate).
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Errors of the audio path.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The AudioSpecificConfig describes audio this path does not handle
    /// (only AAC-LC, mono or stereo, at a standard rate, is supported).
    #[error("unsupported AAC config: {0}")]
    Unsupported(String),
    /// One access unit could not be decoded; the stream goes on (that frame
    /// is replaced by silence).
    #[error("AAC decode error: {0}")]
    Decode(String),
    /// The resampler refused a chunk (not expected: chunk sizes are its own).
    #[error("resampler error: {0}")]
    Resample(String),
    /// libopus could not be set up or could not encode a frame.
    #[error("Opus encoder error: {0}")]
    Encode(String),
}

/// One Opus packet: its RTP timestamp at 48 kHz and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFrame {
    /// RTP timestamp (48 kHz clock) of the packet's first sample.
    pub rtp_time: u32,
    /// The Opus packet (one 20 ms frame).
    pub data: Vec<u8>,
}

/// Where the output stands against the FLV timestamps.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    /// The FLV timestamp the timeline (re)started at.
    start_ms: u32,
    /// Input frames (per channel, input rate) decoded or concealed since.
    in_frames: u64,
    /// 48 kHz frames emitted as Opus since.
    out_frames: u64,
}

/// The resampler and its fixed chunk sizes (frames per channel).
struct Resampling {
    fft: Fft<f32>,
    chunk_in: usize,
    chunk_out: usize,
}

impl Resampling {
    /// Resamples one chunk (`chunk_in` interleaved frames) into `output`;
    /// returns the frames written.
    fn run(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        channels: usize,
    ) -> Result<usize, AudioError> {
        let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
        let input = InterleavedSlice::new(input, channels, self.chunk_in).map_err(|e| err(&e))?;
        let mut output =
            InterleavedSlice::new_mut(output, channels, self.chunk_out).map_err(|e| err(&e))?;
        let (_, produced) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| err(&e))?;
        Ok(produced.min(self.chunk_out))
    }
}

/// Turns AAC-LC access units into 20 ms Opus packets at 48 kHz; see the
/// [module documentation](self) for the pipeline and the timeline.
pub struct AacTranscoder {
    rate: u32,
    /// Input channels, also the Opus channels: 1 or 2.
    channels: u16,
    decoder: AacDecoder,
    /// `None` when the input is already at 48 kHz.
    resampler: Option<Resampling>,
    encoder: Encoder,
    timeline: Option<Timeline>,
    /// Decoded audio at the input rate waiting for a full resampler chunk
    /// (interleaved). Unused without resampling.
    pending_in: Vec<f32>,
    /// 48 kHz audio waiting for a full 20 ms frame (interleaved).
    pending_out: Vec<f32>,
    /// Resampler output frames still to drop after a (re)start: its delay.
    trim: usize,
    /// Scratch for one resampler chunk's output.
    resampled: Vec<f32>,
    /// Scratch for one encoded packet.
    packet: Vec<u8>,
}

impl std::fmt::Debug for AacTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacTranscoder")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("resampling", &self.resampler.is_some())
            .field("timeline", &self.timeline)
            .finish_non_exhaustive()
    }
}

impl AacTranscoder {
    /// From the AudioSpecificConfig (the payload of the FLV AAC sequence
    /// header, e.g. `[0x12, 0x10]` for AAC-LC 44.1 kHz stereo) and the Opus
    /// bitrate in bit/s (clamped to libopus's 500..=512 000; see
    /// [`DEFAULT_BITRATE`]).
    ///
    /// Refuses ([`AudioError::Unsupported`]) anything but AAC-LC with 1024
    /// samples per frame, one or two channels and a standard sampling rate;
    /// HE-AAC (SBR/PS) and multichannel AAC are refused because the decoder
    /// does not handle them.
    pub fn new(audio_specific_config: &[u8], bitrate: u32) -> Result<AacTranscoder, AudioError> {
        let (rate, channels) = parse_asc(audio_specific_config)?;

        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_AAC)
            .with_extra_data(audio_specific_config.into());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| AudioError::Unsupported(e.to_string()))?;

        let resampler = if rate == OPUS_RATE {
            None
        } else {
            // 10 ms chunks: short enough to add little delay, long enough
            // for a good filter. Both sides fixed: no internal buffering.
            let chunk = (rate / 100) as usize;
            let fft = Fft::<f32>::new(
                rate as usize,
                OPUS_RATE as usize,
                chunk,
                usize::from(channels),
                FixedSync::Both,
            )
            .map_err(|e| AudioError::Unsupported(format!("resampling {rate} Hz: {e}")))?;
            Some(Resampling {
                chunk_in: fft.input_frames_next(),
                chunk_out: fft.output_frames_next(),
                fft,
            })
        };

        let opus_channels = if channels >= 2 {
            Channels::Stereo
        } else {
            Channels::Mono
        };
        let mut encoder = Encoder::new(OPUS_RATE, opus_channels, Application::Audio)
            .map_err(|e| AudioError::Encode(e.to_string()))?;
        // In range by the clamp, so the cast is lossless.
        let bits = bitrate.clamp(500, 512_000) as i32;
        encoder
            .set_bitrate(Bitrate::Bits(bits))
            .map_err(|e| AudioError::Encode(e.to_string()))?;

        Ok(AacTranscoder {
            rate,
            channels,
            decoder,
            resampler,
            encoder,
            timeline: None,
            pending_in: Vec::new(),
            pending_out: Vec::new(),
            trim: 0,
            resampled: Vec::new(),
            packet: vec![0; MAX_OPUS_PACKET],
        })
    }

    /// The input's sample rate in Hz (from the config).
    pub fn input_rate(&self) -> u32 {
        self.rate
    }

    /// The input's channel count (from the config): 1 or 2.
    pub fn input_channels(&self) -> u16 {
        self.channels
    }

    /// One raw AAC access unit (FLV AACPacketType 1 payload, no ADTS header)
    /// whose timestamp is `ts_ms` (the FLV timestamp, milliseconds, 32-bit
    /// and may wrap). Appends the Opus packets it completes to `out`.
    ///
    /// On [`AudioError::Decode`] the unit counts as one frame of silence and
    /// the transcoder stays usable: call on with the next unit. Packets
    /// appended to `out` are valid whatever the result, so send them.
    pub fn push(
        &mut self,
        access_unit: &[u8],
        ts_ms: u32,
        out: &mut Vec<OpusFrame>,
    ) -> Result<(), AudioError> {
        self.sync(ts_ms);
        let decoded = self.decode(access_unit);
        let resampled = self.resample();
        let encoded = self.encode(out);
        decoded.and(resampled).and(encoded)
    }

    /// Restarts the timeline at `ts_ms` when this is the first unit or when
    /// `ts_ms` is more than [`RESYNC_MS`] away from where the timeline
    /// expects the next unit.
    fn sync(&mut self, ts_ms: u32) {
        if let Some(t) = self.timeline {
            let elapsed_ms = t.in_frames * 1000 / u64::from(self.rate);
            // Milliseconds wrap with the FLV timestamp (truncation intended).
            let expected = t.start_ms.wrapping_add(elapsed_ms as u32);
            let off = ts_ms.wrapping_sub(expected) as i32;
            if off.unsigned_abs() <= RESYNC_MS {
                return;
            }
            tracing::debug!(
                expected,
                ts_ms,
                off,
                "audio timestamp jump: timeline restarts"
            );
        }
        self.pending_in.clear();
        self.pending_out.clear();
        self.decoder.reset();
        self.trim = 0;
        if let Some(r) = &mut self.resampler {
            r.fft.reset();
            self.trim = r.fft.output_delay();
        }
        self.timeline = Some(Timeline {
            start_ms: ts_ms,
            in_frames: 0,
            out_frames: 0,
        });
    }

    /// Decodes one unit into the pending input (or silence if it fails).
    fn decode(&mut self, access_unit: &[u8]) -> Result<(), AudioError> {
        let channels = usize::from(self.channels);
        let dst = if self.resampler.is_some() {
            &mut self.pending_in
        } else {
            &mut self.pending_out
        };
        let result = if access_unit.is_empty() {
            Err(AudioError::Decode("empty access unit".into()))
        } else {
            let packet = PacketRef::new(0, Timestamp::ZERO, Duration::ZERO, access_unit);
            match self.decoder.decode_ref(&packet) {
                Ok(GenericAudioBufferRef::F32(buf)) if buf.num_planes() > 0 => {
                    let frames = buf.frames();
                    // A stream with fewer channels than configured repeats
                    // its last one.
                    let last = buf.num_planes() - 1;
                    let planes: Vec<&[f32]> = (0..channels)
                        .filter_map(|c| buf.plane(c.min(last)))
                        .filter(|p| p.len() >= frames)
                        .collect();
                    if planes.len() == channels {
                        dst.reserve(frames * channels);
                        for i in 0..frames {
                            dst.extend(planes.iter().map(|p| p[i]));
                        }
                        if let Some(t) = &mut self.timeline {
                            t.in_frames += frames as u64;
                        }
                        return Ok(());
                    }
                    Err(AudioError::Decode("decoder output lacks channels".into()))
                }
                Ok(_) => Err(AudioError::Decode("unexpected decoder output".into())),
                Err(e) => Err(AudioError::Decode(e.to_string())),
            }
        };
        // Conceal the lost unit with silence to keep the timeline.
        dst.resize(dst.len() + AAC_FRAME_SAMPLES * channels, 0.0);
        if let Some(t) = &mut self.timeline {
            t.in_frames += AAC_FRAME_SAMPLES as u64;
        }
        result
    }

    /// Feeds the resampler every full chunk of pending input.
    fn resample(&mut self) -> Result<(), AudioError> {
        let Some(r) = &mut self.resampler else {
            return Ok(());
        };
        let channels = usize::from(self.channels);
        let chunk_len = r.chunk_in * channels;
        self.resampled.resize(r.chunk_out * channels, 0.0);
        let mut pos = 0;
        let mut result = Ok(());
        while self.pending_in.len() - pos >= chunk_len {
            let chunk = &self.pending_in[pos..pos + chunk_len];
            pos += chunk_len;
            match r.run(chunk, &mut self.resampled, channels) {
                Ok(produced) => {
                    let skip = self.trim.min(produced);
                    self.trim -= skip;
                    self.pending_out
                        .extend_from_slice(&self.resampled[skip * channels..produced * channels]);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.pending_in.drain(..pos);
        result
    }

    /// Encodes every full 20 ms frame of pending 48 kHz audio.
    fn encode(&mut self, out: &mut Vec<OpusFrame>) -> Result<(), AudioError> {
        let Some(t) = &mut self.timeline else {
            return Ok(());
        };
        let frame_len = OPUS_FRAME_SAMPLES * usize::from(self.channels);
        let mut pos = 0;
        let mut result = Ok(());
        while self.pending_out.len() - pos >= frame_len {
            let pcm = &self.pending_out[pos..pos + frame_len];
            pos += frame_len;
            // The timeline counts samples, so a wrapping u32 sum is exact.
            let rtp_time = t
                .start_ms
                .wrapping_mul(OPUS_RATE / 1000)
                .wrapping_add(t.out_frames as u32);
            t.out_frames += OPUS_FRAME_SAMPLES as u64;
            match self.encoder.encode_float(pcm, &mut self.packet) {
                Ok(len) => out.push(OpusFrame {
                    rtp_time,
                    data: self.packet.get(..len).unwrap_or_default().to_vec(),
                }),
                Err(e) => {
                    // The frame is lost; the timeline moves on past it.
                    result = Err(AudioError::Encode(e.to_string()));
                    break;
                }
            }
        }
        self.pending_out.drain(..pos);
        result
    }
}

/// Checks an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) for what the
/// decoder handles and returns its sampling rate and channel count.
fn parse_asc(asc: &[u8]) -> Result<(u32, u16), AudioError> {
    let unsupported = |why: String| Err(AudioError::Unsupported(why));
    if asc.len() < 2 {
        return unsupported(format!(
            "AudioSpecificConfig of {} bytes, at least 2 needed",
            asc.len()
        ));
    }
    let mut bits = Bits { data: asc, pos: 0 };
    let mut object_type = bits.read(5);
    if object_type == 31 {
        object_type = 32 + bits.read(6);
    }
    let rate_index = bits.read(4);
    let rate = if rate_index == 15 {
        bits.read(24)
    } else {
        AAC_RATES.get(rate_index as usize).copied().unwrap_or(0)
    };
    let channel_config = bits.read(4);
    // GASpecificConfig.
    let short_frames = bits.read(1) == 1;
    if bits.read(1) == 1 {
        bits.read(14); // coreCoderDelay
    }
    bits.read(1); // extensionFlag (no further fields for AAC-LC)
                  // Backward-compatible HE-AAC signalling: a sync extension after the
                  // AAC-LC config announcing SBR.
    let sbr_extension = asc.len() * 8 >= bits.pos + 16
        && bits.read(11) == 0x2b7
        && bits.read(5) == 5
        && bits.read(1) == 1;
    match object_type {
        2 if sbr_extension => {
            return unsupported(
                "HE-AAC (SBR announced after the AAC-LC config) is not decoded; publish AAC-LC"
                    .into(),
            )
        }
        2 => {}
        5 | 29 => {
            return unsupported(format!(
                "HE-AAC (audio object type {object_type}, SBR/PS) is not decoded; publish AAC-LC"
            ))
        }
        _ => return unsupported(format!("audio object type {object_type} is not AAC-LC (2)")),
    }
    if rate_index == 15 {
        return unsupported(format!(
            "explicit sampling rate {rate} Hz (only the standard AAC rates are supported)"
        ));
    }
    if rate == 0 {
        return unsupported(format!("reserved sampling rate index {rate_index}"));
    }
    let channels = match channel_config {
        1 | 2 => channel_config as u16,
        0 => return unsupported("channel layout in a program config element".into()),
        n => {
            return unsupported(format!(
                "channel configuration {n}: the AAC decoder handles mono and stereo only"
            ))
        }
    };
    if short_frames {
        return unsupported("960-sample AAC frames".into());
    }
    if bits.pos > asc.len() * 8 {
        return unsupported("truncated AudioSpecificConfig".into());
    }
    Ok((rate, channels))
}

/// A most-significant-bit-first reader that reads zeros past the end (the
/// caller checks `pos` against the length afterwards).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> u32 {
        let mut v = 0u32;
        for _ in 0..n {
            let bit = self
                .data
                .get(self.pos / 8)
                .map_or(0, |b| (b >> (7 - self.pos % 8)) & 1);
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    struct Fixture {
        asc: Vec<u8>,
        aac: Vec<u8>,
    }

    impl Fixture {
        fn load(name: &str) -> Fixture {
            let read = |ext: &str| {
                std::fs::read(format!("{FIXTURES}/{name}.{ext}"))
                    .unwrap_or_else(|e| panic!("fixture {name}.{ext}: {e}"))
            };
            Fixture {
                asc: read("asc"),
                aac: read("aac"),
            }
        }

        /// The raw access units: the ADTS stream without its headers.
        fn units(&self) -> Vec<&[u8]> {
            let d = &self.aac[..];
            let mut units = Vec::new();
            let mut i = 0;
            while i + 7 <= d.len() {
                assert!(d[i] == 0xff && d[i + 1] & 0xf0 == 0xf0, "ADTS sync at {i}");
                let header = if d[i + 1] & 1 == 1 { 7 } else { 9 };
                let len = (usize::from(d[i + 3] & 3) << 11)
                    | (usize::from(d[i + 4]) << 3)
                    | usize::from(d[i + 5] >> 5);
                units.push(&d[i + header..i + len]);
                i += len;
            }
            assert_eq!(i, d.len(), "whole ADTS frames");
            units
        }
    }

    /// The FLV timestamp of unit `i` of a stream starting at `base`.
    fn ts(base: u32, i: usize, rate: u32) -> u32 {
        base.wrapping_add((i as u64 * 1024 * 1000 / u64::from(rate)) as u32)
    }

    fn transcode(fixture: &Fixture, base: u32, bitrate: u32) -> (AacTranscoder, Vec<OpusFrame>) {
        let mut t = AacTranscoder::new(&fixture.asc, bitrate).expect("fixture config");
        let mut out = Vec::new();
        for (i, unit) in fixture.units().iter().enumerate() {
            t.push(unit, ts(base, i, t.input_rate()), &mut out)
                .expect("fixture decodes");
        }
        (t, out)
    }

    /// Decodes Opus packets to 48 kHz PCM, first channel only.
    fn decode_opus(frames: &[OpusFrame], channels: u16) -> Vec<f32> {
        let ch = if channels == 2 {
            Channels::Stereo
        } else {
            Channels::Mono
        };
        let mut dec = opus::Decoder::new(OPUS_RATE, ch).expect("opus decoder");
        let n = usize::from(channels);
        let mut buf = vec![0f32; OPUS_FRAME_SAMPLES * n];
        let mut pcm = Vec::new();
        for f in frames {
            let got = dec.decode_float(&f.data, &mut buf, false).expect("decode");
            assert_eq!(got, OPUS_FRAME_SAMPLES);
            pcm.extend(buf.chunks(n).map(|s| s[0]));
        }
        pcm
    }

    /// The strongest frequency in 20..=2000 Hz, 1 Hz steps (Goertzel).
    fn dominant_hz(pcm: &[f32], rate: f64) -> u32 {
        let power = |hz: f64| {
            let k = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
            let (mut s1, mut s2) = (0f64, 0f64);
            for &x in pcm {
                let s = f64::from(x) + k * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            s1 * s1 + s2 * s2 - k * s1 * s2
        };
        (20..=2000)
            .map(|hz| (hz, power(f64::from(hz))))
            .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best })
            .0
    }

    fn check_tone(name: &str, rate: u32, channels: u16) {
        let fixture = Fixture::load(name);
        let units = fixture.units().len();
        let base = 1_000;
        let (t, frames) = transcode(&fixture, base, DEFAULT_BITRATE);
        assert_eq!((t.input_rate(), t.input_channels()), (rate, channels));

        let seconds = (units * 1024) as f64 / f64::from(rate);
        let expected = seconds * 50.0;
        assert!(
            (frames.len() as f64 - expected).abs() <= 2.0,
            "{} packets for {seconds:.3} s",
            frames.len()
        );
        assert_eq!(frames[0].rtp_time, base * 48);
        for w in frames.windows(2) {
            assert_eq!(w[1].rtp_time.wrapping_sub(w[0].rtp_time), 960);
        }

        let pcm = decode_opus(&frames, channels);
        // Skip the first 100 ms (codec and resampler start-up).
        let hz = dominant_hz(&pcm[4_800..], f64::from(OPUS_RATE));
        assert!(
            (431..=449).contains(&hz),
            "dominant frequency {hz} Hz, want 440 Hz ± 2%"
        );
        let tone = &pcm[4_800..];
        let rms = (tone.iter().map(|x| x * x).sum::<f32>() / tone.len() as f32).sqrt();
        assert!(rms > 0.01, "tone is audible: rms {rms}");
    }

    #[test]
    fn tone_survives_44k1_stereo_through_resampling() {
        check_tone("sine440", 44_100, 2);
    }

    #[test]
    fn tone_survives_48k_mono_without_resampling() {
        check_tone("sine440_mono48k", 48_000, 1);
    }

    #[test]
    fn config_is_read_and_checked() {
        let ok = |asc: &[u8]| {
            let t = AacTranscoder::new(asc, DEFAULT_BITRATE).expect("supported");
            (t.input_rate(), t.input_channels())
        };
        assert_eq!(ok(&[0x12, 0x10]), (44_100, 2));
        assert_eq!(ok(&[0x11, 0x88]), (48_000, 1));
        assert_eq!(ok(&[0x11, 0x90]), (48_000, 2));
        assert_eq!(ok(&[0x15, 0x88]), (8_000, 1));
        // ffmpeg appends a GASpecificConfig extension and padding sometimes.
        assert_eq!(ok(&[0x12, 0x10, 0x56, 0xe5, 0x00]), (44_100, 2));

        let refused = |asc: &[u8]| match AacTranscoder::new(asc, DEFAULT_BITRATE) {
            Err(AudioError::Unsupported(why)) => why,
            other => panic!("{asc:02x?}: {other:?}"),
        };
        assert!(refused(&[]).contains("at least 2"));
        assert!(refused(&[0x12]).contains("at least 2"));
        // HE-AAC v1 (explicit SBR signalling) 24 kHz core, stereo.
        assert!(refused(&[0x2b, 0x12, 0x08, 0x00]).contains("HE-AAC"));
        // The same, signalled backward-compatibly after an AAC-LC config.
        assert!(refused(&[0x13, 0x10, 0x56, 0xe5, 0x98]).contains("HE-AAC"));
        // AAC Main.
        assert!(refused(&[0x0a, 0x10]).contains("object type 1"));
        // 5.1 AAC-LC.
        assert!(refused(&[0x12, 0x30]).contains("channel configuration 6"));
        // Channels in a program config element.
        assert!(refused(&[0x12, 0x00]).contains("program config"));
        // Reserved rate index 13, explicit rate.
        assert!(refused(&[0x16, 0x90]).contains("reserved"));
        assert!(refused(&[0x17, 0x80, 0x56, 0x22, 0x10]).contains("explicit"));
        // 960-sample frames.
        assert!(refused(&[0x12, 0x14]).contains("960"));
    }

    #[test]
    fn bitrate_is_applied() {
        let fixture = Fixture::load("sine440");
        let bytes = |bitrate| -> usize {
            let (_, frames) = transcode(&fixture, 0, bitrate);
            frames.iter().map(|f| f.data.len()).sum()
        };
        let low = bytes(24_000);
        let high = bytes(DEFAULT_BITRATE);
        assert!(
            low * 3 < high,
            "24 kbit/s: {low} bytes, 128 kbit/s: {high} bytes"
        );
    }

    #[test]
    fn a_timestamp_jump_restarts_the_timeline() {
        let fixture = Fixture::load("sine440");
        let units = fixture.units();
        let mut t = AacTranscoder::new(&fixture.asc, DEFAULT_BITRATE).unwrap();
        let mut out = Vec::new();
        let half = units.len() / 2;
        // Jitter of a few tens of milliseconds does not restart.
        for (i, unit) in units[..half].iter().enumerate() {
            let jitter: i32 = [0, 30, 0, -40][i % 4];
            let at = ts(0, i, 44_100).wrapping_add_signed(jitter);
            t.push(unit, at, &mut out).unwrap();
        }
        let before = out.len();
        assert!(before > 10);
        for w in out.windows(2) {
            assert_eq!(w[1].rtp_time - w[0].rtp_time, 960);
        }
        // The publisher comes back 5 s later.
        let jump = 5_000 + ts(0, half, 44_100);
        for (i, unit) in units[half..].iter().enumerate() {
            t.push(unit, ts(jump, i, 44_100), &mut out).unwrap();
        }
        assert!(out.len() > before + 10);
        assert_eq!(out[before].rtp_time, jump * 48);
        for w in out[before..].windows(2) {
            assert_eq!(w[1].rtp_time - w[0].rtp_time, 960);
        }
        // And a jump backwards restarts too.
        let mut back = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            t.push(unit, ts(10, i, 44_100), &mut back).unwrap();
        }
        assert_eq!(back[0].rtp_time, 10 * 48);
    }

    #[test]
    fn timestamps_near_u32_max_wrap() {
        let fixture = Fixture::load("sine440");
        let base = u32::MAX - 300;
        let (_, frames) = transcode(&fixture, base, DEFAULT_BITRATE);
        assert!(frames.len() >= 48, "no restart: {} packets", frames.len());
        assert_eq!(frames[0].rtp_time, base.wrapping_mul(48));
        for w in frames.windows(2) {
            assert_eq!(w[1].rtp_time.wrapping_sub(w[0].rtp_time), 960);
        }
    }

    #[test]
    fn a_bad_unit_is_an_error_and_silence_and_the_stream_goes_on() {
        let fixture = Fixture::load("sine440");
        let (_, clean) = transcode(&fixture, 0, DEFAULT_BITRATE);
        let mut t = AacTranscoder::new(&fixture.asc, DEFAULT_BITRATE).unwrap();
        let mut out = Vec::new();
        let mut errors = 0;
        for (i, unit) in fixture.units().iter().enumerate() {
            let unit: &[u8] = match i {
                10 => &[],
                // A program config element: refused by the decoder.
                20 => &[0xa0, 0, 0, 0],
                // Cut short.
                30 => &unit[..unit.len() / 3],
                _ => unit,
            };
            if let Err(e) = t.push(unit, ts(0, i, 44_100), &mut out) {
                assert!(matches!(e, AudioError::Decode(_)), "{e}");
                errors += 1;
            }
        }
        assert_eq!(errors, 3);
        let times = |f: &[OpusFrame]| f.iter().map(|f| f.rtp_time).collect::<Vec<_>>();
        assert_eq!(
            times(&out),
            times(&clean),
            "same timeline as without errors"
        );
    }

    #[test]
    fn random_configs_never_panic() {
        let seeds: &[&[u8]] = &[&[0x12, 0x10], &[0x11, 0x88], &[0x2b, 0x12, 0x08, 0x00]];
        corecast_twin::run(
            0xa5c,
            seeds,
            corecast_twin::Alphabet::Binary,
            8,
            20_000,
            |asc| {
                if let Ok(t) = AacTranscoder::new(asc, DEFAULT_BITRATE) {
                    assert!(AAC_RATES.contains(&t.input_rate()));
                    assert!((1..=2).contains(&t.input_channels()));
                }
            },
        );
    }

    #[test]
    fn random_units_never_panic_and_leave_it_usable() {
        let fixture = Fixture::load("sine440");
        let units = fixture.units();
        let mut t = AacTranscoder::new(&fixture.asc, DEFAULT_BITRATE).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        corecast_twin::run(
            0xaac,
            &units[..8],
            corecast_twin::Alphabet::Binary,
            600,
            5_000,
            |unit| {
                let _ = t.push(unit, ts(0, i, 44_100), &mut out);
                i += 1;
            },
        );
        // Random timestamps too.
        let mut rng = corecast_twin::Rng::new(7);
        for unit in units.iter().take(20) {
            let _ = t.push(unit, rng.next_u64() as u32, &mut out);
        }
        // Still transcodes.
        let mut fresh = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let _ = t.push(unit, ts(1 << 31, i, 44_100), &mut fresh);
        }
        assert!(fresh.len() >= 48);
        assert_eq!(fresh[0].rtp_time, (1u32 << 31).wrapping_mul(48));
    }

    #[test]
    fn the_transcoder_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<AacTranscoder>();
    }
}
