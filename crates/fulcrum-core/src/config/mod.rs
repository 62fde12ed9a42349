//! Configuration in two stages (as Sōzu does): the TOML file is read into [`raw`] structs,
//! then [`validate`](validate::validate) turns them into the [`model`] or into every error,
//! each with its path.

pub mod defaults;
mod error;
pub mod model;
pub mod raw;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: describe_toml_error(text, &e),
            }])
        })?;
        validate::validate(raw)
    }

    /// Makes the file paths the configuration names (`admin.token_file`,
    /// `ha.heartbeat_key_file`) relative to `dir`, the directory of the configuration file,
    /// rather than to wherever fulcrum happens to be started. Absolute paths stay as they are.
    pub fn relative_to(mut self, dir: &std::path::Path) -> Config {
        let resolve = |path: &mut std::path::PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        if let Some(token) = self.admin.as_mut().and_then(|a| a.token_file.as_mut()) {
            resolve(token);
        }
        if let Some(ha) = self.ha.as_mut() {
            if let HaMode::ActivePassive(pair) = &mut ha.mode {
                if let Some(key) = pair.heartbeat_key_file.as_mut() {
                    resolve(key);
                }
            }
        }
        self
    }
}

/// toml's messages are good but multi-line; fold them to one line with a line:column prefix.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests;
