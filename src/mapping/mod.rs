//! The mapping engine: providers as data. A mapping file (`mappings/*.toml`) describes how a Sora job becomes a
//! provider's requests and how its answers come back; [`compile`] validates it once at start-up, and
//! [`engine::MappedBackend`] runs it over [`http`]. No provider is named in Rust code.

pub mod callback;
pub mod compile;
pub mod engine;
pub mod format;
pub mod http;
pub mod jq;
pub mod token;
