//! Who is calling and what they may do: users with argon2 password hashes, login sessions
//! (cookie), their CSRF tokens, API tokens for machines, roles, and the login rate limit.
//!
//! Owns: the session table, in memory (a restart logs everyone out, which is the safe side).
//! Must not touch: alarms or the store; handlers decide what a role may do with `Caller::require`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use std::marker::PhantomData;

use axum::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;

use super::{error, session_id, Shared};
use crate::config::{Role, WebConfig};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "parkguard_session";
/// Header a browser session must send with every state-changing request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Failed logins allowed for one user name from one client address per window; then that
/// pair waits for the window. Keyed on the pair, so that nobody can lock a name out for
/// everyone by failing it on purpose.
const LOGIN_FAILURES_ALLOWED: usize = 5;
/// Failed logins allowed from one address over all names per window (name spraying).
const ADDRESS_FAILURES_ALLOWED: usize = 20;
const LOGIN_WINDOW: Duration = Duration::from_secs(300);
/// A name that failed this often in the window, from anywhere, is under attack: each check
/// for it is delayed first, 0.5 s doubling per further failure up to `NAME_DELAY_MAX`. It is
/// never refused, so its owner still gets in from a clean address.
const NAME_UNDER_ATTACK: usize = 10;
const NAME_DELAY_MAX: Duration = Duration::from_secs(8);
/// Password checks running at once (argon2 takes 19 MiB and tens of milliseconds each); more
/// wait for a slot up to `CHECK_SLOT_WAIT`, then are answered "busy".
pub const CONCURRENT_CHECKS: usize = 2;
pub const CHECK_SLOT_WAIT: Duration = Duration::from_secs(3);

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

/// Why a token opened no browser session (`Auth::token_login`).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenLoginError {
    /// No such token.
    Refused,
    /// Too many failures from this address lately; try again after this long.
    Limited(Duration),
    /// The token is valid but not a viewer's.
    NotViewer(Role),
}

/// The name token logins are counted under by the login limits.
const TOKEN_LOGIN_NAME: &str = "\u{0}api-token";

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password (which of the two is not said).
    Refused,
    /// Too many failures lately; try again after this long.
    Limited(Duration),
    /// Every password-check slot is taken; try again shortly.
    Busy,
}

/// A login attempt admitted by the rate limits: its failure is already counted (and taken
/// back on success), so attempts sent at once cannot pass the limit together.
#[derive(Debug)]
pub struct LoginAttempt {
    address: IpAddr,
    name: String,
    /// Wait this long before checking (a name under attack).
    pub delay: Duration,
}

pub struct Auth {
    users: HashMap<String, User>,
    /// SHA-256 of each token -> who holds it.
    tokens: HashMap<[u8; 32], Caller>,
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    failures: Mutex<Failures>,
    /// SHA-256 of the token `/metrics` requires, if one is configured.
    metrics_token: Option<[u8; 32]>,
    /// Slots for password checks (`CONCURRENT_CHECKS`).
    pub check_slots: tokio::sync::Semaphore,
    /// Verified when the user name is unknown, so that a wrong name takes as long as a
    /// wrong password and names cannot be probed by timing.
    decoy_hash: String,
}

/// Recent failures (and attempts under way, counted as failures until they succeed).
#[derive(Default)]
struct Failures {
    by_pair: HashMap<(IpAddr, String), VecDeque<Instant>>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    by_name: HashMap<String, VecDeque<Instant>>,
}

/// Drops what left the window; how long until the window has room for one more under `limit`.
fn window_wait(window: &mut VecDeque<Instant>, limit: usize, now: Instant) -> Option<Duration> {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) > LOGIN_WINDOW)
    {
        window.pop_front();
    }
    let oldest = window.front().filter(|_| window.len() >= limit)?;
    Some(
        LOGIN_WINDOW
            .saturating_sub(now.duration_since(*oldest))
            .max(Duration::from_secs(1)),
    )
}

impl Failures {
    /// Admits an attempt (counting it as a failure at once) or says how long to wait.
    fn admit(&mut self, address: IpAddr, name: &str, now: Instant) -> Result<Duration, Duration> {
        let pair = (address, name.to_string());
        let waits = [
            self.by_pair
                .get_mut(&pair)
                .and_then(|w| window_wait(w, LOGIN_FAILURES_ALLOWED, now)),
            self.by_address
                .get_mut(&address)
                .and_then(|w| window_wait(w, ADDRESS_FAILURES_ALLOWED, now)),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        let name_failures = self.by_name.get_mut(name).map_or(0, |w| {
            window_wait(w, usize::MAX, now);
            w.len()
        });
        let delay = match name_failures.checked_sub(NAME_UNDER_ATTACK) {
            Some(beyond) => Duration::from_millis(500)
                .saturating_mul(1u32.checked_shl(beyond as u32).unwrap_or(u32::MAX))
                .min(NAME_DELAY_MAX),
            None => Duration::ZERO,
        };
        self.by_pair.entry(pair).or_default().push_back(now);
        self.by_address.entry(address).or_default().push_back(now);
        self.prune(now);
        Ok(delay)
    }

    /// The attempt failed: it counts against the name as well.
    fn failed(&mut self, name: &str, now: Instant) {
        // Unknown names are recorded too; the table is bounded by pruning old windows.
        self.by_name
            .entry(name.to_string())
            .or_default()
            .push_back(now);
        self.prune(now);
    }

    /// The attempt succeeded: the pair's failures are forgotten, and the address's one
    /// reserved for this attempt is taken back.
    fn succeeded(&mut self, address: IpAddr, name: &str) {
        self.by_pair.remove(&(address, name.to_string()));
        if let Some(window) = self.by_address.get_mut(&address) {
            window.pop_back();
        }
    }

    fn prune(&mut self, now: Instant) {
        let recent = |w: &VecDeque<Instant>| {
            w.back()
                .is_some_and(|t| now.duration_since(*t) < LOGIN_WINDOW)
        };
        if self.by_pair.len() > 10_000 {
            self.by_pair.retain(|_, w| recent(w));
        }
        if self.by_name.len() > 10_000 {
            self.by_name.retain(|_, w| recent(w));
        }
        if self.by_address.len() > 10_000 {
            self.by_address.retain(|_, w| recent(w));
        }
    }
}

/// A random token of 32 bytes, base64url: session ids, CSRF tokens, API tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The argon2id hash (PHC string) of a password, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt: [u8; 16] = rand::random();
    PasswordHasher::<PasswordHash>::hash_password_with_salt(
        &Argon2::default(),
        password.as_bytes(),
        &salt,
    )
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
            metrics_token: config.metrics_token_sha256.as_deref().and_then(parse_hex32),
            check_slots: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            decoy_hash: hash_password("decoy").unwrap_or_default(),
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Checks a name and password at once (slow on purpose: argon2; call it off the async
    /// threads), ignoring a delay the name is under. Returns the new session's id and caller.
    pub fn login(
        &self,
        address: IpAddr,
        name: &str,
        password: &str,
    ) -> Result<(String, Caller), LoginError> {
        let attempt = self.begin_login(address, name)?;
        self.check_password(attempt, password)
    }

    /// The rate limits' word on an attempt: admitted (with a delay to wait first) or limited.
    pub fn begin_login(&self, address: IpAddr, name: &str) -> Result<LoginAttempt, LoginError> {
        let delay = self
            .failures()
            .admit(address, name, Instant::now())
            .map_err(LoginError::Limited)?;
        Ok(LoginAttempt {
            address,
            name: name.to_string(),
            delay,
        })
    }

    /// Whether `name` is a configured user (for logs: a submitted name that is not may be a
    /// mistyped password and is never logged).
    pub fn is_user(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Checks an admitted attempt's password (argon2: call it off the async threads, holding
    /// a check slot).
    pub fn check_password(
        &self,
        attempt: LoginAttempt,
        password: &str,
    ) -> Result<(String, Caller), LoginError> {
        let LoginAttempt { address, name, .. } = attempt;
        let name = name.as_str();
        let now = Instant::now();
        let user = self.users.get(name);
        let hash = user.map_or(self.decoy_hash.as_str(), |u| u.password_hash.as_str());
        let verified = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        match user {
            Some(user) if verified => {
                self.failures().succeeded(address, name);
                Ok(self.open_session(name, user.role))
            }
            _ => {
                self.failures().failed(name, now);
                Err(LoginError::Refused)
            }
        }
    }

    /// A new session for `name` with `role` and a fresh CSRF token: (its id, the caller).
    fn open_session(&self, name: &str, role: Role) -> (String, Caller) {
        let now = Instant::now();
        let caller = Caller {
            name: name.to_string(),
            role,
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
        (id, caller)
    }

    /// A browser session for the holder of a viewer API token: how the wall display's kiosk
    /// browser logs in (an event stream cannot send an `Authorization` header). Counted by the
    /// login limits like a password (all tokens as one name); a token of a higher role opens
    /// no session, so that a screen on a wall can never give commands.
    pub fn token_login(
        &self,
        address: IpAddr,
        token: &str,
    ) -> Result<(String, Caller), TokenLoginError> {
        self.failures()
            .admit(address, TOKEN_LOGIN_NAME, Instant::now())
            .map_err(TokenLoginError::Limited)?;
        let Some(holder) = self.token(token) else {
            // The failure stays counted against the address.
            return Err(TokenLoginError::Refused);
        };
        self.failures().succeeded(address, TOKEN_LOGIN_NAME);
        if holder.role != Role::Viewer {
            return Err(TokenLoginError::NotViewer(holder.role));
        }
        Ok(self.open_session(&holder.name, holder.role))
    }

    pub fn logout(&self, session_id: &str) {
        self.sessions().remove(session_id);
    }

    /// Whether a session is still live (logged in, not expired), without keeping it alive:
    /// an event stream ends with its session.
    pub fn session_alive(&self, session_id: &str) -> bool {
        self.sessions()
            .get(session_id)
            .is_some_and(|s| s.last_used.elapsed() < self.idle)
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

    /// Whether `/metrics` needs a token (or a login).
    pub fn metrics_locked(&self) -> bool {
        self.metrics_token.is_some()
    }

    /// Whether `token` is the metrics token.
    pub fn is_metrics_token(&self, token: &str) -> bool {
        self.metrics_token
            .is_some_and(|expected| same_secret_bytes(&token_digest(token), &expected))
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

/// Authentication: a session cookie (with the CSRF token on state-changing requests) or an
/// API token.
#[async_trait]
impl FromRequestParts<Shared> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return token
                .and_then(|t| state.auth.token(t))
                .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown API token"));
        }
        let caller = session_id(&parts.headers)
            .and_then(|id| state.auth.session(id))
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "log in first"))?;
        let changes_state = !matches!(parts.method, Method::GET | Method::HEAD);
        if changes_state {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expected = caller.csrf.as_deref().unwrap_or("\u{0}");
            if !same_secret(sent, expected) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token (X-CSRF-Token header)",
                ));
            }
        }
        Ok(caller)
    }
}

/// A caller whose role reaches `R`'s (viewer < operator < technician < admin); anyone else is
/// answered 403 naming both roles, before the handler runs.
pub struct Require<R: RoleBound>(pub Caller, pub PhantomData<R>);

/// A role a handler requires, as a type for `Require`.
pub trait RoleBound {
    const ROLE: Role;
}

/// Technicians and admins: commissioning, device-wide commands.
pub struct Technician;

impl RoleBound for Technician {
    const ROLE: Role = Role::Technician;
}

#[async_trait]
impl<R: RoleBound + Send> FromRequestParts<Shared> for Require<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller
            .require(R::ROLE)
            .map_err(|message| error(StatusCode::FORBIDDEN, message))?;
        Ok(Require(caller, PhantomData))
    }
}

pub use crate::secure::{same_secret, same_secret_bytes};

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
            max_connections: 256,
            max_connections_per_address: 32,
            metrics_token_sha256: None,
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
    fn attempts_sent_at_once_cannot_pass_the_limit_together() {
        let auth = auth();
        // Admitted but not yet checked: each already counts.
        let admitted: Vec<LoginAttempt> = (0..LOGIN_FAILURES_ALLOWED)
            .map(|_| auth.begin_login(HOME, "op").expect("admitted"))
            .collect();
        assert!(matches!(
            auth.begin_login(HOME, "op"),
            Err(LoginError::Limited(_))
        ));
        drop(admitted);
    }

    #[test]
    fn a_name_failed_from_many_addresses_is_delayed_not_locked() {
        let auth = auth();
        for last in 1..=(NAME_UNDER_ATTACK as u8 + 2) {
            let attacker = IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
            let attempt = auth.begin_login(attacker, "op").expect("admitted");
            assert_eq!(
                auth.check_password(attempt, "guess").err(),
                Some(LoginError::Refused)
            );
        }
        let clean = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
        let attempt = auth.begin_login(clean, "op").expect("not locked out");
        assert_eq!(attempt.delay, Duration::from_secs(2), "0.5 s doubled twice");
        auth.check_password(attempt, "secret")
            .expect("the owner gets in");
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
    fn only_a_viewer_token_opens_a_session_and_failures_are_limited() {
        let mut config = WebConfig {
            listen: "127.0.0.1:0".into(),
            tls_cert: None,
            tls_key: None,
            session_idle_hours: 1.0,
            users: Vec::new(),
            tokens: Vec::new(),
            max_connections: 256,
            max_connections_per_address: 32,
            metrics_token_sha256: None,
        };
        for (name, role, token) in [
            ("wall", Role::Viewer, "wall-token"),
            ("scada", Role::Operator, "op-token"),
        ] {
            config.tokens.push(crate::config::WebTokenConfig {
                name: name.into(),
                role,
                token_sha256: token_sha256_hex(token),
            });
        }
        let auth = Auth::new(&config);
        let (id, caller) = auth.token_login(HOME, "wall-token").expect("viewer token");
        assert_eq!((caller.name.as_str(), caller.role), ("wall", Role::Viewer));
        assert!(caller.csrf.is_some());
        assert_eq!(auth.session(&id).map(|c| c.name), Some("wall".into()));
        assert_eq!(
            auth.token_login(HOME, "op-token").err(),
            Some(TokenLoginError::NotViewer(Role::Operator))
        );
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert_eq!(
                auth.token_login(HOME, "guess").err(),
                Some(TokenLoginError::Refused)
            );
        }
        assert!(matches!(
            auth.token_login(HOME, "wall-token"),
            Err(TokenLoginError::Limited(_))
        ));
    }

    #[test]
    fn token_hash_round_trips() {
        let hex = token_sha256_hex("abc");
        assert_eq!(parse_hex32(&hex), Some(token_digest("abc")));
    }
}
