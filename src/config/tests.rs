//! Unit tests of config loading and merging.
use super::*;

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&Overrides {
        file: Some(file),
        ..Overrides::default()
    })
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::load(&Overrides::default()).unwrap();
    assert!(c.is_default());
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.models["sora-2-pro"].sizes.len(), 6);
    assert!(matches!(c.store, StoreConfig::Sqlite { ref path } if path.ends_with("data/sora-shim.db")));
}

#[test]
fn file_overrides_single_keys_and_keeps_the_rest() {
    let c = load_text("[server]\npoll_after_ms = 100\n[backends.local]\nkind = \"local\"\nfps = 8\n").unwrap();
    assert_eq!(c.server.poll_after_ms, 100);
    assert_eq!(c.server.max_body_bytes, 52_428_800);
    assert!(matches!(c.backends["local"], BackendConfig::Local { fps, .. } if fps.get() == 8));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let err = load_text(
        "[server]\nlisten = \"nowhere\"\nmax_body_bytes = 0\n[models.m]\nbackend = \"nope\"\nsizes = [\"big\"]\nseconds = [\"4\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("server.max_body_bytes"), "{err}");
    assert!(err.contains("models.\"m\".backend"), "{err}");
    assert!(err.contains("models.\"m\".sizes"), "{err}");
    assert!(err.contains("api.default_model"), "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let err = load_text("[server]\nlisten_on = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("listen_on"), "{err}");
}
