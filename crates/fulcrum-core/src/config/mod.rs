//! Configuration in two stages (as Sōzu does): the TOML file is read into [`raw`] structs,
//! then [`validate`](validate::validate) turns them into the [`model`] or into every error,
//! each with its path.

pub mod defaults;
mod error;
pub mod model;
pub mod raw;
mod shape;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

impl Config {
    /// Parses and validates a configuration file's text: every unknown key, wrong type and
    /// semantic error at once, each with its path.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let shape::Shape {
            raw,
            errors: shape_errors,
        } = shape::read(text)?;
        let semantic = match validate::validate(raw) {
            Ok(config) if shape_errors.is_empty() => return Ok(config),
            Ok(_) => Vec::new(),
            Err(errors) => errors.0,
        };
        let mut errors = shape_errors;
        let consequences_left_out: Vec<ConfigError> = semantic
            .into_iter()
            .filter(|e| !shape::covered(&errors, &e.path))
            .collect();
        errors.extend(consequences_left_out);
        Err(ConfigErrors(errors))
    }

    /// Makes the file paths the configuration names (`admin.token_file`,
    /// `ha.heartbeat_key_file`, TLS certificates, keys and CAs) relative to `dir`, the directory of the configuration file,
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
        if let Some(socket) = self.runtime.upgrade_socket.as_mut() {
            resolve(socket);
        }
        for tls in self.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            for files in &mut tls.certificates {
                resolve(&mut files.cert);
                resolve(&mut files.key);
            }
            if let Some(client) = tls.client_auth.as_mut() {
                resolve(&mut client.ca);
            }
        }
        for ca in self
            .pools
            .values_mut()
            .filter_map(|p| p.tls.as_mut()?.ca.as_mut())
        {
            resolve(ca);
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

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
