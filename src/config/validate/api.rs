//! `api:`: the HTTP API listener, its limits and `api.auth.tokens`.

use serde_yaml::Value;

use super::super::limits;
use super::super::{Api, ApiToken, ConfigError};
use super::{
    Ctx, expect_list, expect_mapping, read_flag, read_in, read_key, read_size, read_span,
    read_strings, read_text, to_json,
};
use crate::secret::Secret;

pub(super) const API_KEYS: &[&str] = &[
    "enabled",
    "listen",
    "auth",
    "max_body_size",
    "metrics_public",
    "threads",
    "max_connections",
    "max_event_streams",
    "max_concurrent_sync",
    "max_sync_timeout",
    "ui",
    "base_path",
    "session_lifetime",
];

const AUTH_KEYS: &[&str] = &["tokens"];

const TOKEN_KEYS: &[&str] = &["token", "scopes"];

pub(super) fn build_api(ctx: &mut Ctx, value: Option<&Value>) -> Result<Api, ConfigError> {
    let mut api = Api::default();
    let Some(value) = value else {
        return Ok(api);
    };
    let map = expect_mapping(ctx, value, "api")?;
    let mut extra = serde_json::Map::new();
    for (key, path, value) in ctx.entries(map, "api", API_KEYS) {
        match key.as_str() {
            "enabled" => api.enabled = read_flag(ctx, value, &path)?,
            "listen" => api.listen = read_listen(ctx, value, &path)?,
            "auth" => api.auth_tokens = build_auth(ctx, value, &path)?,
            "max_body_size" => {
                api.max_body_size = read_size(ctx, value, &path, limits::BODY_SIZE)?;
            }
            "metrics_public" => api.metrics_public = read_flag(ctx, value, &path)?,
            "threads" => api.threads = read_in(ctx, value, &path, limits::API_THREADS)?,
            "max_connections" => {
                api.max_connections = read_in(ctx, value, &path, limits::API_MAX_CONNECTIONS)?;
            }
            "max_event_streams" => {
                api.max_event_streams = read_in(ctx, value, &path, limits::API_MAX_EVENT_STREAMS)?;
            }
            "max_concurrent_sync" => {
                api.max_concurrent_sync =
                    read_in(ctx, value, &path, limits::API_MAX_CONCURRENT_SYNC)?;
            }
            "max_sync_timeout" => {
                api.max_sync_timeout = read_span(ctx, value, &path, limits::API_MAX_SYNC_TIMEOUT)?;
            }
            "ui" => api.ui = Some(read_flag(ctx, value, &path)?),
            "base_path" => api.base_path = read_base_path(ctx, value, &path)?,
            "session_lifetime" => {
                api.session_lifetime = read_span(ctx, value, &path, limits::API_SESSION_LIFETIME)?;
            }
            _ => {
                ctx.note_inactive(&path);
                extra.insert(key, to_json(ctx, value, &path)?);
            }
        }
    }
    api.extra = serde_json::Value::Object(extra);
    Ok(api)
}

/// A listen address as written (`127.0.0.1:8080`, `localhost:8080`); binding
/// is the listener's business, but an empty one is a mistake worth naming here.
pub(super) fn read_listen(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let listen = read_text(ctx, value, path)?;
    if listen.trim().is_empty() {
        return Err(ctx.error(path, "must not be empty"));
    }
    Ok(listen)
}

/// `api.base_path`: `/` or empty for none, else `/seg[/seg...]` of URL-safe
/// characters; a trailing slash is dropped (`/ductile/` is `/ductile`).
fn read_base_path(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let text = read_text(ctx, value, path)?;
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Err(ctx.error(path, "must start with `/` (for example `/ductile`)"));
    };
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    };
    if !rest.split('/').all(segment_ok) {
        return Err(ctx.error(
            path,
            "must be `/` followed by path segments of letters, digits, `-`, `_`, `.` or `~` (no empty, `.` or `..` segment)",
        ));
    }
    Ok(trimmed.to_string())
}

fn build_auth(ctx: &mut Ctx, value: &Value, prefix: &str) -> Result<Vec<ApiToken>, ConfigError> {
    let map = expect_mapping(ctx, value, prefix)?;
    let mut tokens = Vec::new();
    for (_, path, value) in ctx.entries(map, prefix, AUTH_KEYS) {
        for (index, item) in expect_list(ctx, value, &path)?.iter().enumerate() {
            let origin = format!("{path}[{index}]");
            tokens.push(build_token(ctx, item, origin)?);
        }
    }
    Ok(tokens)
}

fn build_token(ctx: &mut Ctx, value: &Value, origin: String) -> Result<ApiToken, ConfigError> {
    let map = expect_mapping(ctx, value, &origin)?;
    let mut token = None;
    let mut scopes = Vec::new();
    for (key, path, value) in ctx.entries(map, &origin, TOKEN_KEYS) {
        match key.as_str() {
            "token" => token = Some(read_key(ctx, value, &path)?),
            _ => scopes = read_strings(ctx, value, &path)?,
        }
    }
    let Some(token) = token else {
        return Err(ctx.error(&origin, "`token` is required"));
    };
    Ok(ApiToken {
        token: Secret::new(token),
        scopes,
        file: ctx.provenance.file_of(&origin),
        origin,
    })
}
