//! Secrets: where a password or token comes from (environment, file, systemd credential), read
//! once at load into the `Secret` that declared it, so that code asks the section it serves for
//! its secret and a mistyped key cannot silently give none.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SiteFile;

/// A secret taken from the environment, a file or a systemd credential, never written into the
/// site file itself: give exactly one of `env`, `file` or `credential`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (trailing newline removed), relative to the site file's folder.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=NAME:/path` in the unit): read from
    /// `$CREDENTIALS_DIRECTORY/NAME`, which only the service can read, unlike `Environment=`,
    /// which `systemctl show` prints to every local user.
    #[serde(default)]
    pub credential: Option<String>,
    /// The secret itself, read when the configuration is loaded.
    #[serde(skip)]
    value: Option<SecretValue>,
}

/// A secret's text; never printed (`Debug` shows `***`).
#[derive(Clone)]
struct SecretValue(std::sync::Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("credential", &self.credential)
            .field("value", &self.value.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Secret {
    /// The secret read at load time; `None` only for a `Secret` that did not come through
    /// `Config::load`.
    pub fn value(&self) -> Option<&str> {
        self.value.as_ref().map(|v| &*v.0)
    }

    /// Reads the secret now. `base` is the site file's folder.
    pub fn resolve(&self, base: &Path) -> Result<String, String> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|err| format!("cannot read secret file {}: {err}", path.display()))
        };
        match (&self.env, &self.file, &self.credential) {
            (Some(var), None, None) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            (None, Some(file), None) => read(base.join(file)),
            (None, None, Some(name)) => {
                if name.is_empty() || name.contains('/') || name == ".." {
                    return Err(format!("credential `{name}` is not a credential name"));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "credential `{name}`: CREDENTIALS_DIRECTORY is not set (the unit needs `LoadCredential={name}:/path/to/file`)"
                    )
                })?;
                read(PathBuf::from(dir).join(name))
            }
            _ => Err("give exactly one of `env`, `file` or `credential`".into()),
        }
    }
}

/// Reads every secret of the site into its `Secret`, each failure reported at the key that
/// declared it.
pub(super) fn resolve_secrets(
    site: &mut SiteFile,
    base: &Path,
    report: &mut dyn FnMut(String, String),
) {
    let mut resolve = |path: String, secret: &mut Option<Secret>| {
        if let Some(secret) = secret {
            match secret.resolve(base) {
                Ok(value) => secret.value = Some(SecretValue(value.into())),
                Err(message) => report(path, message),
            }
        }
    };
    for (i, m) in site.mqtt.iter_mut().enumerate() {
        resolve(format!("mqtt[{i}].password"), &mut m.password);
    }
    for (i, s) in site.influx.iter_mut().enumerate() {
        resolve(format!("influx[{i}].password"), &mut s.password);
        resolve(format!("influx[{i}].token"), &mut s.token);
    }
    let mut short_tokens = Vec::new();
    let mut bad_access_keys = Vec::new();
    for (i, e) in site.http_ingest.iter_mut().enumerate() {
        let mut token = Some(e.token.clone());
        resolve(format!("http_ingest[{i}].token"), &mut token);
        if let Some(token) = token {
            // The token is all that keeps strangers from raising and clearing alarms through
            // an endpoint that takes no login: an empty or guessable one is refused.
            if let Some(value) = token.value() {
                let chars = value.chars().count();
                if chars < super::http_ingest::MIN_TOKEN_CHARS {
                    short_tokens.push((i, chars));
                }
            }
            e.token = token;
        }
        // The platform API's secrets are required fields: resolved through an `Option` like
        // the optional ones, and put back with their value.
        if let Some(api) = &mut e.ctwing_api {
            for (key, secret) in [
                ("app_secret", &mut api.app_secret),
                ("master_key", &mut api.master_key),
            ] {
                let mut held = Some(secret.clone());
                resolve(format!("http_ingest[{i}].ctwing_api.{key}"), &mut held);
                if let Some(held) = held {
                    *secret = held;
                }
            }
        }
        if let Some(api) = &mut e.onenet_api {
            let mut held = Some(api.access_key.clone());
            resolve(format!("http_ingest[{i}].onenet_api.access_key"), &mut held);
            if let Some(held) = held {
                // A key that is not Base64 could sign nothing: said at load, not at the
                // first alarm.
                if let Some(value) = held.value() {
                    use base64::Engine;
                    if base64::engine::general_purpose::STANDARD
                        .decode(value.trim())
                        .is_err()
                    {
                        bad_access_keys.push(i);
                    }
                }
                api.access_key = held;
            }
        }
    }
    if let Some(alerts) = &mut site.alerts {
        for (i, c) in alerts.channels.iter_mut().enumerate() {
            resolve(format!("alerts.channels[{i}].secret"), &mut c.secret);
            resolve(format!("alerts.channels[{i}].password"), &mut c.password);
        }
    }
    for i in bad_access_keys {
        report(
            format!("http_ingest[{i}].onenet_api.access_key"),
            "is not Base64: give the access key exactly as the OneNET console shows it".into(),
        );
    }
    for (i, chars) in short_tokens {
        report(
            format!("http_ingest[{i}].token"),
            format!(
                "the token has {chars} characters; at least {} are needed (a random string: `openssl rand -hex 16`)",
                super::http_ingest::MIN_TOKEN_CHARS
            ),
        );
    }
}
