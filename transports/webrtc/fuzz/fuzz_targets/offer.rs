//! WHIP and WHEP offers: any body gives an endpoint or an error, never a panic.
#![no_main]
use std::sync::OnceLock;
use std::time::Instant;

use corecast_webrtc::EndpointConfig;

#[path = "../harness.rs"]
mod harness;

fn config() -> &'static EndpointConfig {
    static CONFIG: OnceLock<EndpointConfig> = OnceLock::new();
    CONFIG.get_or_init(|| EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::offer(config(), Instant::now(), data);
});
