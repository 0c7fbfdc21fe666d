//! The bodies of RTMP audio and video messages: FLV tag data, legacy and
//! Enhanced RTMP (E-RTMP v1 video with a FourCC, v2 audio with a FourCC).
//!
//! Only the few header bytes are read here; the codec data is handed on as
//! a slice. Multitrack and ModEx packets are reported as unsupported.

/// A video codec of an FLV tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Hevc,
    Av1,
    Vp9,
    /// A legacy codec id (Sorenson, VP6, …) or an unknown FourCC.
    Other(u32),
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
            VideoCodec::Hevc => "HEVC",
            VideoCodec::Av1 => "AV1",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::Other(_) => "other",
        }
    }
}

/// A video message's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// The decoder configuration (AVCDecoderConfigurationRecord, av1C,
    /// vpcC, hvcC).
    Sequence { codec: VideoCodec, config: &'a [u8] },
    /// A coded frame. `composition_ms` is the presentation offset from the
    /// decode time (non-zero with B-frames).
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        composition_ms: i32,
        data: &'a [u8],
    },
    /// End of sequence.
    End { codec: VideoCodec },
    /// Metadata, command frames, multitrack: nothing to forward.
    Ignored {
        codec: VideoCodec,
        what: &'static str,
    },
}

/// An audio codec of an FLV tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Opus,
    /// A legacy sound format (MP3, Speex, …) or an unknown FourCC.
    Other(u32),
}

impl AudioCodec {
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "AAC",
            AudioCodec::Opus => "Opus",
            AudioCodec::Other(_) => "other",
        }
    }
}

/// An audio message's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AudioSpecificConfig (AAC) or the OpusHead (Opus).
    Sequence {
        codec: AudioCodec,
        config: &'a [u8],
    },
    /// One coded access unit.
    Frame {
        codec: AudioCodec,
        data: &'a [u8],
    },
    End {
        codec: AudioCodec,
    },
    Ignored {
        codec: AudioCodec,
        what: &'static str,
    },
}

/// Why a tag body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvError {
    /// Shorter than its header.
    Truncated,
}

impl std::fmt::Display for FlvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FLV tag body truncated")
    }
}

impl std::error::Error for FlvError {}

fn fourcc(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn video_fourcc(v: u32) -> VideoCodec {
    match &v.to_be_bytes() {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::Hevc,
        b"av01" => VideoCodec::Av1,
        b"vp09" => VideoCodec::Vp9,
        _ => VideoCodec::Other(v),
    }
}

fn audio_fourcc(v: u32) -> AudioCodec {
    match &v.to_be_bytes() {
        b"Opus" => AudioCodec::Opus,
        b"mp4a" => AudioCodec::Aac,
        _ => AudioCodec::Other(v),
    }
}

/// A signed 24-bit big-endian value.
fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

/// Reads a video message's body.
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let &first = body.first().ok_or(FlvError::Truncated)?;
    if first & 0x80 != 0 {
        return parse_video_enhanced(body);
    }
    let frame_type = (first >> 4) & 0x07;
    let codec_id = first & 0x0f;
    let codec = match codec_id {
        7 => VideoCodec::H264,
        // Pre-standard HEVC (and AV1) ids some encoders used.
        12 => VideoCodec::Hevc,
        other => VideoCodec::Other(u32::from(other)),
    };
    if frame_type == 5 {
        return Ok(VideoTag::Ignored {
            codec,
            what: "command frame",
        });
    }
    if codec != VideoCodec::H264 && codec != VideoCodec::Hevc {
        return Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == 1,
            composition_ms: 0,
            data: &body[1..],
        });
    }
    let h = body.get(1..5).ok_or(FlvError::Truncated)?;
    let data = &body[5..];
    Ok(match h[0] {
        0 => VideoTag::Sequence {
            codec,
            config: data,
        },
        1 => VideoTag::Frame {
            codec,
            keyframe: frame_type == 1,
            composition_ms: si24(&h[1..4]),
            data,
        },
        2 => VideoTag::End { codec },
        _ => VideoTag::Ignored {
            codec,
            what: "unknown AVC packet type",
        },
    })
}

/// E-RTMP: `1 | frame type (3) | packet type (4)`, FourCC, then per type.
fn parse_video_enhanced(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let first = body[0];
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    let codec = video_fourcc(fourcc(body.get(1..5).ok_or(FlvError::Truncated)?));
    let data = &body[5..];
    if frame_type == 5 && packet_type != 0 && packet_type != 2 {
        return Ok(VideoTag::Ignored {
            codec,
            what: "command frame",
        });
    }
    Ok(match packet_type {
        0 => VideoTag::Sequence {
            codec,
            config: data,
        },
        1 => {
            // CodedFrames: AVC and HEVC carry a composition time.
            let (cts, data) = match codec {
                VideoCodec::H264 | VideoCodec::Hevc => {
                    let c = data.get(..3).ok_or(FlvError::Truncated)?;
                    (si24(c), &data[3..])
                }
                _ => (0, data),
            };
            VideoTag::Frame {
                codec,
                keyframe: frame_type == 1,
                composition_ms: cts,
                data,
            }
        }
        2 => VideoTag::End { codec },
        // CodedFramesX: composition time zero.
        3 => VideoTag::Frame {
            codec,
            keyframe: frame_type == 1,
            composition_ms: 0,
            data,
        },
        4 => VideoTag::Ignored {
            codec,
            what: "metadata",
        },
        5 => VideoTag::Ignored {
            codec,
            what: "MPEG-2 TS sequence start",
        },
        6 => VideoTag::Ignored {
            codec,
            what: "multitrack",
        },
        _ => VideoTag::Ignored {
            codec,
            what: "unknown packet type",
        },
    })
}

/// Reads an audio message's body.
pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let &first = body.first().ok_or(FlvError::Truncated)?;
    let format = first >> 4;
    if format == 9 {
        // E-RTMP v2: ExHeader, packet type in the low nibble, FourCC.
        let packet_type = first & 0x0f;
        let codec = audio_fourcc(fourcc(body.get(1..5).ok_or(FlvError::Truncated)?));
        let data = &body[5..];
        return Ok(match packet_type {
            0 => AudioTag::Sequence {
                codec,
                config: data,
            },
            1 => AudioTag::Frame { codec, data },
            2 => AudioTag::End { codec },
            4 => AudioTag::Ignored {
                codec,
                what: "multichannel config",
            },
            5 => AudioTag::Ignored {
                codec,
                what: "multitrack",
            },
            _ => AudioTag::Ignored {
                codec,
                what: "unknown packet type",
            },
        });
    }
    if format != 10 {
        return Ok(AudioTag::Frame {
            codec: AudioCodec::Other(u32::from(format)),
            data: &body[1..],
        });
    }
    let &kind = body.get(1).ok_or(FlvError::Truncated)?;
    let data = &body[2..];
    let codec = AudioCodec::Aac;
    Ok(match kind {
        0 => AudioTag::Sequence {
            codec,
            config: data,
        },
        1 => AudioTag::Frame { codec, data },
        _ => AudioTag::Ignored {
            codec,
            what: "unknown AAC packet type",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_tags() {
        let seq = [0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f];
        assert_eq!(
            parse_video(&seq),
            Ok(VideoTag::Sequence {
                codec: VideoCodec::H264,
                config: &[1, 0x64, 0, 0x1f]
            })
        );
        let key = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65];
        assert_eq!(
            parse_video(&key),
            Ok(VideoTag::Frame {
                codec: VideoCodec::H264,
                keyframe: true,
                composition_ms: 0,
                data: &[0, 0, 0, 2, 0x65][..]
            })
        );
        // An inter frame with a composition time of 66 ms (a B-frame
        // stream), and a negative one.
        let inter = [0x27, 1, 0, 0, 66, 9];
        assert!(matches!(
            parse_video(&inter),
            Ok(VideoTag::Frame {
                keyframe: false,
                composition_ms: 66,
                ..
            })
        ));
        let neg = [0x27, 1, 0xff, 0xff, 0xfe, 9];
        assert!(matches!(
            parse_video(&neg),
            Ok(VideoTag::Frame {
                composition_ms: -2,
                ..
            })
        ));
        assert_eq!(
            parse_video(&[0x17, 2, 0, 0, 0]),
            Ok(VideoTag::End {
                codec: VideoCodec::H264
            })
        );
        assert_eq!(parse_video(&[0x17, 1, 0]), Err(FlvError::Truncated));
        assert_eq!(parse_video(&[]), Err(FlvError::Truncated));
        // Sorenson H.263: another codec, passed up as such.
        assert!(matches!(
            parse_video(&[0x22, 1, 2]),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Other(2),
                ..
            })
        ));
    }

    #[test]
    fn enhanced_video_tags() {
        // Key frame, SequenceStart, av01.
        let seq = [0x90, b'a', b'v', b'0', b'1', 0x81, 0x05];
        assert_eq!(
            parse_video(&seq),
            Ok(VideoTag::Sequence {
                codec: VideoCodec::Av1,
                config: &[0x81, 0x05]
            })
        );
        // Inter frame, CodedFrames, vp09: no composition time.
        let f = [0xa1, b'v', b'p', b'0', b'9', 7, 8];
        assert_eq!(
            parse_video(&f),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Vp9,
                keyframe: false,
                composition_ms: 0,
                data: &[7, 8]
            })
        );
        // Key frame, CodedFrames, hvc1: composition time 33.
        let h = [0x91, b'h', b'v', b'c', b'1', 0, 0, 33, 1];
        assert_eq!(
            parse_video(&h),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: true,
                composition_ms: 33,
                data: &[1]
            })
        );
        // CodedFramesX of avc1.
        let x = [0x93, b'a', b'v', b'c', b'1', 5];
        assert!(matches!(
            parse_video(&x),
            Ok(VideoTag::Frame {
                codec: VideoCodec::H264,
                composition_ms: 0,
                ..
            })
        ));
        assert!(matches!(
            parse_video(&[0x96, b'a', b'v', b'0', b'1']),
            Ok(VideoTag::Ignored {
                what: "multitrack",
                ..
            })
        ));
        assert_eq!(parse_video(&[0x90, b'a']), Err(FlvError::Truncated));
    }

    #[test]
    fn audio_tags() {
        assert_eq!(
            parse_audio(&[0xaf, 0, 0x12, 0x10]),
            Ok(AudioTag::Sequence {
                codec: AudioCodec::Aac,
                config: &[0x12, 0x10]
            })
        );
        assert_eq!(
            parse_audio(&[0xaf, 1, 0x21, 0x00]),
            Ok(AudioTag::Frame {
                codec: AudioCodec::Aac,
                data: &[0x21, 0]
            })
        );
        assert_eq!(
            parse_audio(&[0x91, b'O', b'p', b'u', b's', 0xfc]),
            Ok(AudioTag::Frame {
                codec: AudioCodec::Opus,
                data: &[0xfc]
            })
        );
        assert!(matches!(
            parse_audio(&[0x90, b'O', b'p', b'u', b's', b'O']),
            Ok(AudioTag::Sequence {
                codec: AudioCodec::Opus,
                ..
            })
        ));
        // MP3.
        assert!(matches!(
            parse_audio(&[0x2f, 1]),
            Ok(AudioTag::Frame {
                codec: AudioCodec::Other(2),
                ..
            })
        ));
        assert_eq!(parse_audio(&[0xaf]), Err(FlvError::Truncated));
        assert_eq!(parse_audio(&[0x90, b'O']), Err(FlvError::Truncated));
    }
}
