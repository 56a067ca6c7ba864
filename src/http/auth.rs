//! Who may call what: bearer tokens and their scopes for the API, and the
//! secret checks of webhook requests.
//!
//! Tokens come from `api.auth.tokens` and from `tokens:` (tokens.yaml). Every
//! comparison with a secret is constant-time: a presented token is hashed with
//! BLAKE3 and compared with every stored hash (`blake3::Hash` equality is
//! constant-time), all of them, without stopping at a match.
//!
//! Owns: scope parsing and normalisation, the scope × need decision, bearer
//! header parsing, HMAC verification. Must not: log or echo a token, read
//! files, or know routes (the router names the [`Need`] of each request).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Config, Finding};
use crate::secret::Secret;

/// A part of the API a scope can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Plugin and pipeline triggers, plugin details.
    Plugin,
    /// Job status, lists and logs.
    Jobs,
    /// The event stream.
    Events,
}

/// Read-only or read-write; `Rw` implies `Ro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Read access (`:ro`).
    Ro,
    /// Read and write access (`:rw`).
    Rw,
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: discovery and health endpoints.
    Public,
    /// `area` at `level` or above (`jobs:ro` for `GET /jobs`).
    Area(Area, Level),
    /// Access to one plugin: `plugin:ro|rw`, or that plugin's own scope.
    Plugin {
        /// The plugin instance.
        plugin: String,
        /// Whether the command writes (needs `rw`).
        write: bool,
    },
    /// Full access (`*`): reload, config view, analytics.
    Admin,
}

/// One granted scope, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// `*` or `admin`.
    All,
    /// `plugin:ro`, `jobs:rw`, ... (and the legacy `read:jobs`, `write:jobs`, ...).
    Area(Area, Level),
    /// `<plugin>:ro|rw`: that plugin only.
    OnePlugin { plugin: String, level: Level },
}

impl Scope {
    /// The scope `text` spells, or `None` for a string that is not a scope.
    fn parse(text: &str) -> Option<Scope> {
        if text == "*" || text == "admin" {
            return Some(Scope::All);
        }
        let (left, right) = text.split_once(':')?;
        let area = |name: &str| match name {
            "plugin" => Some(Area::Plugin),
            "jobs" => Some(Area::Jobs),
            "events" => Some(Area::Events),
            _ => None,
        };
        let level = match right {
            "ro" => Some(Level::Ro),
            "rw" => Some(Level::Rw),
            _ => None,
        };
        match (left, level) {
            // The spec's legacy spellings: `read:jobs`, `write:events`, ...
            ("read", None) => area(right).map(|a| Scope::Area(a, Level::Ro)),
            ("write", None) => area(right).map(|a| Scope::Area(a, Level::Rw)),
            (_, Some(level)) => match area(left) {
                Some(a) => Some(Scope::Area(a, level)),
                None if is_plugin_name(left) => Some(Scope::OnePlugin {
                    plugin: left.to_string(),
                    level,
                }),
                None => None,
            },
            _ => None,
        }
    }

    /// The normalised spelling (`jobs:ro`, `withings:rw`, `*`).
    fn spell(&self) -> String {
        let level = |l: &Level| match l {
            Level::Ro => "ro",
            Level::Rw => "rw",
        };
        match self {
            Scope::All => "*".to_string(),
            Scope::Area(area, l) => {
                let a = match area {
                    Area::Plugin => "plugin",
                    Area::Jobs => "jobs",
                    Area::Events => "events",
                };
                format!("{a}:{}", level(l))
            }
            Scope::OnePlugin { plugin, level: l } => format!("{plugin}:{}", level(l)),
        }
    }

    /// Whether this scope alone allows `need`.
    fn grants(&self, need: &Need) -> bool {
        match (self, need) {
            (_, Need::Public) | (Scope::All, _) => true,
            (Scope::Area(area, level), Need::Area(wanted, at_least)) => {
                area == wanted && level >= at_least
            }
            (Scope::Area(Area::Plugin, level), Need::Plugin { write, .. }) => {
                *level >= required(*write)
            }
            (Scope::OnePlugin { plugin, level }, Need::Plugin { plugin: p, write }) => {
                plugin == p && *level >= required(*write)
            }
            _ => false,
        }
    }
}

fn required(write: bool) -> Level {
    if write { Level::Rw } else { Level::Ro }
}

/// Plugin names as a per-plugin scope may spell them. `read` and `write` are
/// the legacy prefixes, so `read:rw` is no plugin scope.
fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && !matches!(name, "read" | "write")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a request presents to be authorised.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'r> {
    /// Nothing.
    None,
    /// An `Authorization` header value.
    Header(&'r [u8]),
    /// A token already known by its BLAKE3: a sign-in body's, or the one a
    /// dashboard session was opened with.
    Token(blake3::Hash),
}

/// The caller a request was authorised as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's display name (`api.auth.tokens[0]`, or its tokens.yaml
    /// `name`), `anonymous` on public endpoints; never the secret.
    pub name: String,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <known token>`.
    Unknown,
    /// A known token without the scope the request needs.
    Forbidden,
    /// A dashboard session cookie that is unknown, expired or signed out,
    /// or whose token is no longer configured.
    SessionEnded,
    /// A mutation with the session cookie but without its CSRF token.
    Csrf,
}

impl AuthError {
    /// The HTTP status: 401 for a missing or unknown token, 403 for a missing scope.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Unknown | AuthError::SessionEnded => 401,
            AuthError::Forbidden | AuthError::Csrf => 403,
        }
    }

    /// A short message for the response body; it never quotes the token.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing bearer token",
            AuthError::Unknown => "invalid bearer token",
            AuthError::Forbidden => "token lacks the scope for this request",
            AuthError::SessionEnded => {
                "the dashboard session has expired or was signed out; sign in again"
            }
            AuthError::Csrf => {
                "a request with the session cookie that changes anything must carry the X-CSRF-Token header (GET /session returns it)"
            }
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// One token as the API checks it.
struct Entry {
    /// Display name (see [`Caller::name`]).
    name: String,
    /// BLAKE3 of the token.
    hash: blake3::Hash,
    /// Its scopes, normalised; unknown strings left out.
    scopes: Vec<Scope>,
    /// The key, for `tokens:` entries (webhook `secret_ref`); none for `api.auth.tokens`.
    secret: Option<Secret<String>>,
}

/// A known token, before its scopes are checked.
pub struct Identity<'t> {
    entry: &'t Entry,
}

impl Identity<'_> {
    /// The token's display name (never its value).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The token's scopes, normalised (`jobs:ro`, `*`).
    pub fn scopes(&self) -> Vec<String> {
        self.entry.scopes.iter().map(Scope::spell).collect()
    }

    /// The caller when one of the token's scopes grants `need`, else 403.
    pub fn allows(&self, need: &Need) -> Result<Caller, AuthError> {
        if self.entry.scopes.iter().any(|scope| scope.grants(need)) {
            Ok(Caller {
                name: self.entry.name.clone(),
            })
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

/// The tokens of one config snapshot, ready to authorise requests.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

impl Tokens {
    /// The tokens of `config` (`api.auth.tokens`, then `tokens:`), and a
    /// warning for each scope string that is not a scope: it grants nothing.
    pub fn build(config: &Config) -> (Tokens, Vec<Finding>) {
        let mut warnings = Vec::new();
        let mut entries = Vec::new();
        let mut scopes_of = |name: &str, written: &[String], file: &std::path::Path, at: &str| {
            let mut scopes = Vec::new();
            for (index, text) in written.iter().enumerate() {
                match Scope::parse(text) {
                    Some(scope) => scopes.push(scope),
                    None => warnings.push(Finding {
                        file: file.to_path_buf(),
                        path: format!("{at}[{index}]"),
                        message: format!(
                            "token `{name}`: unknown scope `{}`; it grants nothing",
                            text.escape_debug()
                        ),
                    }),
                }
            }
            scopes
        };
        for token in &config.api.auth_tokens {
            let at = format!("{}.scopes", token.origin);
            entries.push(Entry {
                name: token.origin.clone(),
                hash: blake3::hash(token.token.expose().as_bytes()),
                scopes: scopes_of(&token.origin, &token.scopes, &token.file, &at),
                secret: None,
            });
        }
        for token in &config.tokens {
            let (file, at) = match &token.scopes_file {
                Some(file) => (file.clone(), "scopes".to_string()),
                None => (token.file.clone(), format!("{}.scopes", token.origin)),
            };
            entries.push(Entry {
                name: token.name.clone(),
                hash: blake3::hash(token.key.expose().as_bytes()),
                scopes: scopes_of(&token.name, &token.scopes, &file, &at),
                secret: Some(token.key.clone()),
            });
        }
        (Tokens { entries }, warnings)
    }

    /// Each token's name and normalised scopes, never its value (`/config/view`).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.name,
                        "scopes": e.scopes.iter().map(Scope::spell).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    /// Whether no token is configured (every non-public request is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key of the `tokens:` entry called `name`, for a webhook's
    /// `secret_ref`. `None` when there is none (its token was dropped): the
    /// webhook must then refuse the request.
    pub fn secret(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .filter(|e| e.name == name)
            .find_map(|e| e.secret.as_ref())
            .map(|s| s.expose().as_bytes())
    }

    /// Decides a request from what it presents. Public needs nothing;
    /// anything else needs a credential naming a known token with a scope
    /// that grants `need`.
    pub fn authorize(&self, credential: Credential<'_>, need: &Need) -> Result<Caller, AuthError> {
        if *need == Need::Public {
            return Ok(Caller {
                name: "anonymous".to_string(),
            });
        }
        self.identify(credential)?.allows(need)
    }

    /// The token a request presents (401 when there is none or it is
    /// unknown), for a handler that learns what it needs only after looking
    /// the request up. A header must be `Bearer <token>` exactly: the scheme
    /// in any case, one space, the token, nothing around it.
    pub fn identify(&self, credential: Credential<'_>) -> Result<Identity<'_>, AuthError> {
        match credential {
            Credential::None => Err(AuthError::Missing),
            Credential::Header(header) => self.find(&presented(header)?),
            Credential::Token(hash) => self.find(&hash),
        }
    }

    /// The token whose BLAKE3 is `presented` (401 when none is).
    fn find(&self, presented: &blake3::Hash) -> Result<Identity<'_>, AuthError> {
        let presented = *presented;
        let mut found = None;
        // Every entry is compared, match or not, so the time taken does not
        // say where (or whether) a token matched.
        for entry in &self.entries {
            let matched = entry.hash == presented;
            if matched && found.is_none() {
                found = Some(entry);
            }
        }
        found
            .map(|entry| Identity { entry })
            .ok_or(AuthError::Unknown)
    }
}

/// A new secret the daemon hands out (a session cookie, a job's callback
/// token): 244 random bits from the OS generator (two UUIDv4s), 64 hex digits.
pub fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The BLAKE3 of the token an `Authorization` header value presents; 401
/// for anything but `Bearer <token>`.
fn presented(authorization_header: &[u8]) -> Result<blake3::Hash, AuthError> {
    bearer(authorization_header)
        .map(blake3::hash)
        .ok_or(AuthError::Unknown)
}

/// The token of a `Bearer <token>` header value; `None` for anything else.
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme[..6].eq_ignore_ascii_case(b"bearer") || scheme[6] != b' ' {
        return None;
    }
    let around = |b: Option<&u8>| b.is_some_and(u8::is_ascii_whitespace);
    if rest.is_empty() || around(rest.first()) || around(rest.last()) {
        return None;
    }
    Some(rest)
}

/// Whether `header_value` is the HMAC-SHA256 of `body` under `secret`, written
/// `sha256=<hex>` (GitHub's form) or as bare hex, in either case. Constant-time
/// in the signature; an empty secret verifies nothing.
pub fn verify_hmac(secret: &[u8], body: &[u8], header_value: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let value = header_value.trim_ascii();
    let hex = match value.split_at_checked(7) {
        Some((prefix, hex)) if prefix.eq_ignore_ascii_case(b"sha256=") => hex,
        _ => value,
    };
    let Some(signature) = decode_hex(hex) else {
        return false;
    };
    if signature.len() != 32 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Whether `a` and `b` are equal, in time that does not depend on where they
/// differ: both are hashed and the hashes compared in constant time. For
/// `auth: token` webhooks, whose secret arrives as is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    blake3::hash(a) == blake3::hash(b)
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests;
