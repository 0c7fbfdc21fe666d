//! The engine's integration tests: real nodes on loopback, driven by the
//! clients in the transport crates. One test binary for all of them, so the
//! engine and its dependencies are linked once, not once per file (each link
//! is over 100 MB in the release profile the tests share with the end-to-end
//! runs). Each module below is one subject; `cargo test --release --workspace
//! --test it sip::` runs one of them (`--workspace`, not `-p corecast`: the
//! same features as scripts/build, so nothing compiles again).

mod common;
mod sip_phone;

mod admission;
mod auth;
mod bad_input;
mod cluster;
mod fanout_across_shards;
mod hostile_rpc;
mod moq;
mod publisher_switch;
mod rooms;
mod rtmp;
mod second_address;
mod simulcast;
mod sip;
mod sip_hook;
mod sip_out;
mod speakers;
