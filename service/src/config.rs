//! How a service loads its config: its defaults, then a TOML file, then the environment
//! variables with its prefix (nested keys with `__`: `TICKMESH_OMS_STREAM__REPLICAS=3`).
//! A key the config does not know is refused when its struct says `deny_unknown_fields`;
//! a value that is well-typed but unusable is a [`ConfigError`] that names the key.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A config value that is well-typed but unusable; names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// The error for `key`.
pub fn bad(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Whether `name` is usable as a stream or bucket name, or as one token of a subject: 1
/// to `max` ASCII letters, digits, `-` or `_`.
pub fn is_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `defaults`, then `file` (if given; it must exist), then the variables named
/// `<env_prefix><KEY>`. Not validated: the caller checks the values next.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&Path>,
    env_prefix: &str,
) -> anyhow::Result<T> {
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        if !file.exists() {
            anyhow::bail!("config file {} does not exist", file.display());
        }
        fig = fig.merge(Toml::file(file));
    }
    fig.merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))
}
