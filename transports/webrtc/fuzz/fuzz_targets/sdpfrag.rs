//! PATCH bodies (application/trickle-ice-sdpfrag).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(f) = corecast_webrtc::parse_sdpfrag(text) {
            assert_eq!(f.ufrag.is_some(), f.pwd.is_some());
        }
    }
});
