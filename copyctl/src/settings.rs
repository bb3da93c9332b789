//! copyctl's own configuration: `$XDG_CONFIG_HOME/copyctl/config.toml`
//! (`~/.config/copyctl/config.toml`), or the file given with `--config`.
//! Read as strictly as copyd's: a mistake is one error naming the file,
//! the line and the key. Command-line options and environment variables
//! win over the file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    client: Client,
    display: Display,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Client {
    /// Accepted, unused: copyd is reached over D-Bus (see `address`).
    socket_path: Option<String>,
    /// D-Bus address of copyd's bus, when neither --address nor
    /// COPYD_ADDRESS is given.
    address: Option<String>,
    /// How copy and move check their copies without --verify: none, size,
    /// crc32, md5 or sha256.
    default_verify_method: Option<String>,
    /// Draw a progress bar for copy and move without --progress.
    show_progress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Display {
    /// How often the progress bar redraws at most, e.g. "500ms", "1s".
    progress_update_interval: Option<String>,
    /// Colour in the progress bar (never with NO_COLOR).
    use_color: Option<bool>,
}

/// The settings in use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: Option<PathBuf>,
    pub address: Option<String>,
    pub show_progress: bool,
    pub progress_update_interval: Duration,
    pub use_color: bool,
    /// --verify's default (`[client] default_verify_method`).
    pub verify: Option<String>,
    /// Things to say with -v, once.
    pub notes: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            file: None,
            address: None,
            show_progress: false,
            progress_update_interval: Duration::from_millis(100),
            use_color: true,
            verify: None,
            notes: Vec::new(),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The settings in use (the defaults until [`load`] ran).
pub fn get() -> Settings {
    SETTINGS.get().cloned().unwrap_or_default()
}

/// Where copyctl looks without --config.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("copyctl/config.toml"))
}

/// A duration as "500ms", "2s", "1.5s" or a number of milliseconds.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1e-3)
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value * scale))
}

/// Reads the file (`explicit`, else the default location if it exists)
/// and puts its settings in use.
pub fn load(explicit: Option<&Path>) -> Result<Settings, String> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => default_path().filter(|p| p.exists()),
    };
    let mut settings = Settings::default();
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
        let file: File =
            copyd_service::config::parse_strict(path, &text).map_err(|err| err.to_string())?;
        let error = |table: &str, key: &str, message: String| {
            copyd_service::config::ConfigError {
                file: path.clone(),
                line: copyd_service::config::find_key(&text, table, key),
                key: Some(format!("{table}.{key}")),
                message,
            }
            .to_string()
        };
        settings.file = Some(path.clone());
        settings.address = file.client.address;
        if let Some(show) = file.client.show_progress {
            settings.show_progress = show;
        }
        if let Some(socket) = file.client.socket_path {
            settings.notes.push(format!(
                "{}: [client] socket_path = {socket:?} is not used: copyctl reaches copyd over D-Bus (set address to pick the bus)",
                path.display()
            ));
        }
        match file.client.default_verify_method.as_deref() {
            None => {}
            Some(method) if crate::VERIFY_METHODS.contains(&method) => {
                settings.verify = Some(method.to_owned())
            }
            Some(other) => {
                return Err(error(
                    "client",
                    "default_verify_method",
                    format!(
                        "{other:?} is not a method ({})",
                        crate::VERIFY_METHODS.join(", ")
                    ),
                ))
            }
        }
        if let Some(text) = &file.display.progress_update_interval {
            settings.progress_update_interval = duration(text).ok_or_else(|| {
                error(
                    "display",
                    "progress_update_interval",
                    format!("{text:?} is not a duration (e.g. 500ms, 1s)"),
                )
            })?;
        }
        if let Some(colour) = file.display.use_color {
            settings.use_color = colour;
        }
    }
    if std::env::var_os("NO_COLOR").is_some() {
        settings.use_color = false;
    }
    let _ = SETTINGS.set(settings.clone());
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(duration("soon"), None);
    }
}
