//! Mapping between str0m payload parameters and [`CodecInfo`].

use corecast_media::{Codec, CodecInfo};
use str0m::format::{Codec as RtcCodec, CodecConfig, PayloadParams};

/// The codec behind a payload type, if corecast forwards it.
pub fn codec_info(params: &PayloadParams) -> Option<CodecInfo> {
    let spec = params.spec();
    let codec = match spec.codec {
        RtcCodec::Opus => Codec::Opus,
        RtcCodec::PCMU => Codec::Pcmu,
        RtcCodec::PCMA => Codec::Pcma,
        RtcCodec::Vp8 => Codec::Vp8,
        RtcCodec::Vp9 => Codec::Vp9,
        RtcCodec::H264 => Codec::H264,
        RtcCodec::Av1 => Codec::Av1,
        _ => return None,
    };
    let mut info = CodecInfo::new(codec, spec.clock_rate.get());
    if codec == Codec::H264 {
        // profile_idc only: receivers decode any level and the
        // constraint flags of the same profile in practice.
        info.h264_profile = spec.format.profile_level_id.map(|p| (p >> 16) as u16);
        info.h264_packetization_mode = Some(spec.format.packetization_mode.unwrap_or(0));
    }
    Some(info)
}

/// The codecs the server negotiates: Opus, VP8, VP9, H264 with
/// packetization-mode 1, and AV1. All are passed through, never transcoded.
pub fn server_codecs() -> CodecConfig {
    let mut all = CodecConfig::new_with_defaults();
    all.enable_pcmu(false, false);
    all.enable_pcma(false, false);
    all.enable_g722(false, false);
    all.enable_comfort_noise(false);
    all.enable_amr_wb(false);
    all.enable_h265(false);
    all.enable_h266(false);
    let kept: Vec<PayloadParams> = all
        .params()
        .iter()
        .filter(|p| codec_info(p).is_some_and(|c| c.h264_packetization_mode != Some(0)))
        .cloned()
        .collect();
    CodecConfig::new_from_payload_params(kept)
}

/// The server codecs and H.264 High 4:4:4 Predictive, for connections that
/// receive (WHEP viewers, SDK peers): what Chromium offers instead of
/// High. Its decoders play every lower profile (see `CodecInfo::plays`),
/// so a High stream (an RTMP encoder's) reaches such viewers. Publishers
/// (WHIP) are not offered it: nothing should send it.
pub fn viewer_codecs() -> CodecConfig {
    let mut config = server_codecs();
    let used: Vec<u8> = config
        .params()
        .iter()
        .flat_map(|p| [Some(*p.pt()), p.resend().map(|r| *r)])
        .flatten()
        .collect();
    let mut free = (96u8..=127).chain(35..=63).filter(|pt| !used.contains(pt));
    if let (Some(pt), Some(rtx)) = (free.next(), free.next()) {
        config.add_h264(pt.into(), Some(rtx.into()), true, 0xf4001f);
    }
    config
}

/// The server codecs restricted to those in `allowed` for the kinds that
/// `allowed` names; a kind it does not name keeps every server codec (a
/// viewer of an audio-only stream still negotiates its video m-line, so it
/// stays in the BUNDLE group). Kept in the server's order of preference.
pub(crate) fn restricted_codecs(allowed: &[CodecInfo]) -> CodecConfig {
    let kept = viewer_codecs()
        .params()
        .iter()
        .filter(|p| {
            codec_info(p).is_some_and(|c| {
                allowed.iter().any(|a| c.plays(a)) || !allowed.iter().any(|a| a.kind() == c.kind())
            })
        })
        .cloned()
        .collect();
    CodecConfig::new_from_payload_params(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codecs_cover_the_forwarded_set() {
        let infos: Vec<CodecInfo> = server_codecs()
            .params()
            .iter()
            .filter_map(codec_info)
            .collect();
        for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            assert!(infos.iter().any(|c| c.codec == codec), "{codec:?} missing");
        }
        assert!(infos
            .iter()
            .filter(|c| c.codec == Codec::H264)
            .all(|c| c.h264_packetization_mode == Some(1)));
        assert!(!infos.iter().any(|c| c.codec == Codec::Pcmu));
        // High 4:4:4 Predictive, which Chromium offers instead of High, for
        // viewers only.
        assert!(!infos.iter().any(|c| c.h264_profile == Some(0xf4)));
        let viewer: Vec<CodecInfo> = viewer_codecs()
            .params()
            .iter()
            .filter_map(codec_info)
            .collect();
        assert!(viewer.iter().any(|c| c.h264_profile == Some(0xf4)));
    }

    #[test]
    fn restriction_keeps_only_allowed() {
        let vp8 = CodecInfo::new(Codec::Vp8, 90_000);
        let opus = CodecInfo {
            codec: Codec::Opus,
            clock_rate: 48_000,
            h264_profile: None,
            h264_packetization_mode: None,
        };
        let cfg = restricted_codecs(&[vp8, opus]);
        let infos: Vec<CodecInfo> = cfg.params().iter().filter_map(codec_info).collect();
        assert_eq!(infos, vec![opus, vp8]);
        // Audio only: video keeps every server codec.
        let cfg = restricted_codecs(&[opus]);
        let infos: Vec<CodecInfo> = cfg.params().iter().filter_map(codec_info).collect();
        assert_eq!(infos.iter().filter(|c| c.codec == Codec::Opus).count(), 1);
        assert!(infos.iter().any(|c| c.codec == Codec::Vp8));
        assert!(infos.iter().any(|c| c.codec == Codec::Av1));
    }
}
