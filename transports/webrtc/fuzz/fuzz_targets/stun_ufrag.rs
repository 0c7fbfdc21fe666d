//! The media port's first look at every unknown datagram.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = corecast_webrtc::classify(data);
    if let Some(ufrag) = corecast_webrtc::stun_local_ufrag(data) {
        assert!(!ufrag.is_empty());
        assert!(!ufrag.contains(':'));
    }
});
