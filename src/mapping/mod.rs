//! Providers as data. A mapping file (`mappings/*.toml`) describes how a Sora job becomes a provider's requests
//! and how its answers come back; [`compile`] validates it once at start-up, and
//! [`crate::backends::mapped::MappedBackend`] runs it over [`crate::http`]. No provider is named in Rust code.

pub mod callback;
pub mod compile;
pub mod format;
pub mod jq;
pub mod token;
