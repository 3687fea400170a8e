//! Who is calling and what they may do: users with argon2 password hashes, login sessions
//! (cookie), their CSRF tokens, API tokens for machines, roles, and the login rate limit.
//!
//! Owns: the session table, in memory (a restart logs everyone out, which is the safe side).
//! Must not touch: alarms or the store; handlers decide what a role may do with `Caller::require`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Role, WebConfig};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "parkguard_session";
/// Header a browser session must send with every state-changing request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Failed logins allowed from one client address, or for one user name, per window.
const LOGIN_FAILURES_ALLOWED: usize = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// Who a request comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token (absent for API tokens, which browsers do not send by
    /// themselves and so need none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

impl Caller {
    /// `Ok` when the caller's role reaches `needed`.
    pub fn require(&self, needed: Role) -> Result<(), String> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(format!(
                "`{}` is a {}; this needs the {} role",
                self.name,
                self.role.as_str(),
                needed.as_str()
            ))
        }
    }
}

struct User {
    role: Role,
    password_hash: String,
}

struct Session {
    caller: Caller,
    last_used: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password (which of the two is not said).
    Refused,
    /// Too many failures lately; try again after this long.
    Limited(Duration),
}

pub struct Auth {
    users: HashMap<String, User>,
    /// SHA-256 of each token -> who holds it.
    tokens: HashMap<[u8; 32], Caller>,
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    failures: Mutex<Failures>,
    /// Verified when the user name is unknown, so that a wrong name takes as long as a
    /// wrong password and names cannot be probed by timing.
    decoy_hash: String,
}

#[derive(Default)]
struct Failures {
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    by_name: HashMap<String, VecDeque<Instant>>,
}

impl Failures {
    /// How long until another attempt is allowed, if the limit is reached.
    fn wait(&mut self, address: IpAddr, name: &str, now: Instant) -> Option<Duration> {
        let mut longest = None;
        for window in [
            self.by_address.get_mut(&address),
            self.by_name.get_mut(name),
        ]
        .into_iter()
        .flatten()
        {
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) > LOGIN_WINDOW)
            {
                window.pop_front();
            }
            if window.len() >= LOGIN_FAILURES_ALLOWED {
                if let Some(oldest) = window.front() {
                    let wait = LOGIN_WINDOW.saturating_sub(now.duration_since(*oldest));
                    longest = longest.max(Some(wait.max(Duration::from_secs(1))));
                }
            }
        }
        longest
    }

    fn record(&mut self, address: IpAddr, name: &str, now: Instant) {
        self.by_address.entry(address).or_default().push_back(now);
        // Unknown names are recorded too; the table is bounded by pruning old windows.
        self.by_name
            .entry(name.to_string())
            .or_default()
            .push_back(now);
        if self.by_name.len() > 10_000 || self.by_address.len() > 10_000 {
            self.by_name.retain(|_, w| {
                w.back()
                    .is_some_and(|t| now.duration_since(*t) < LOGIN_WINDOW)
            });
            self.by_address.retain(|_, w| {
                w.back()
                    .is_some_and(|t| now.duration_since(*t) < LOGIN_WINDOW)
            });
        }
    }

    fn clear(&mut self, address: IpAddr, name: &str) {
        self.by_address.remove(&address);
        self.by_name.remove(name);
    }
}

/// A random token of 32 bytes, base64url: session ids, CSRF tokens, API tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The argon2id hash (PHC string) of a password, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// SHA-256 of an API token, as hex: what `[[web.tokens]]` stores.
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    pub fn new(config: &WebConfig) -> Auth {
        let users = config
            .users
            .iter()
            .map(|u| {
                let user = User {
                    role: u.role,
                    password_hash: u.password_hash.clone(),
                };
                (u.name.clone(), user)
            })
            .collect();
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let caller = Caller {
                    name: t.name.clone(),
                    role: t.role,
                    csrf: None,
                };
                Some((parse_hex32(&t.token_sha256)?, caller))
            })
            .collect();
        Auth {
            users,
            tokens,
            sessions: Mutex::new(HashMap::new()),
            idle: Duration::from_secs_f64(config.session_idle_hours * 3600.0),
            failures: Mutex::new(Failures::default()),
            decoy_hash: hash_password("decoy").unwrap_or_default(),
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Checks a name and password (slow on purpose: argon2; call it off the async threads).
    /// Returns the new session's id and its caller.
    pub fn login(
        &self,
        address: IpAddr,
        name: &str,
        password: &str,
    ) -> Result<(String, Caller), LoginError> {
        let now = Instant::now();
        if let Some(wait) = self.failures().wait(address, name, now) {
            return Err(LoginError::Limited(wait));
        }
        let user = self.users.get(name);
        let hash = user.map_or(self.decoy_hash.as_str(), |u| u.password_hash.as_str());
        let verified = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        match user {
            Some(user) if verified => {
                self.failures().clear(address, name);
                let caller = Caller {
                    name: name.to_string(),
                    role: user.role,
                    csrf: Some(random_token()),
                };
                let id = random_token();
                let mut sessions = self.sessions();
                sessions.retain(|_, s| now.duration_since(s.last_used) < self.idle);
                sessions.insert(
                    id.clone(),
                    Session {
                        caller: caller.clone(),
                        last_used: now,
                    },
                );
                Ok((id, caller))
            }
            _ => {
                self.failures().record(address, name, now);
                Err(LoginError::Refused)
            }
        }
    }

    pub fn logout(&self, session_id: &str) {
        self.sessions().remove(session_id);
    }

    /// The caller of a live session, which this use keeps alive.
    pub fn session(&self, session_id: &str) -> Option<Caller> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let session = sessions.get_mut(session_id)?;
        if now.duration_since(session.last_used) >= self.idle {
            sessions.remove(session_id);
            return None;
        }
        session.last_used = now;
        Some(session.caller.clone())
    }

    /// The holder of an API token.
    pub fn token(&self, token: &str) -> Option<Caller> {
        self.tokens.get(&token_digest(token)).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebUserConfig;
    use std::net::Ipv4Addr;

    fn auth() -> Auth {
        let config = WebConfig {
            listen: "127.0.0.1:0".into(),
            tls_cert: None,
            tls_key: None,
            session_idle_hours: 1.0,
            users: vec![WebUserConfig {
                name: "op".into(),
                role: Role::Operator,
                password_hash: hash_password("secret").unwrap_or_default(),
            }],
            tokens: Vec::new(),
        };
        Auth::new(&config)
    }

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn right_password_opens_a_session_with_a_csrf_token() {
        let auth = auth();
        let (id, caller) = auth.login(HOME, "op", "secret").expect("login");
        assert_eq!(caller.role, Role::Operator);
        assert!(caller.csrf.is_some());
        assert_eq!(auth.session(&id).map(|c| c.name), Some("op".into()));
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
    }

    #[test]
    fn five_failures_lock_the_address_out_even_with_the_right_password() {
        let auth = auth();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert_eq!(
                auth.login(HOME, "op", "wrong").err(),
                Some(LoginError::Refused)
            );
        }
        assert!(matches!(
            auth.login(HOME, "op", "secret"),
            Err(LoginError::Limited(_))
        ));
    }

    #[test]
    fn unknown_user_is_refused_like_a_wrong_password() {
        let auth = auth();
        assert_eq!(
            auth.login(HOME, "nobody", "secret").err(),
            Some(LoginError::Refused)
        );
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = Caller {
            name: "v".into(),
            role: Role::Viewer,
            csrf: None,
        };
        assert!(viewer.require(Role::Operator).is_err());
        assert!(viewer.require(Role::Viewer).is_ok());
    }

    #[test]
    fn token_hash_round_trips() {
        let hex = token_sha256_hex("abc");
        assert_eq!(parse_hex32(&hex), Some(token_digest("abc")));
    }
}
