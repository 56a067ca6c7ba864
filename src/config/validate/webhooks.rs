//! `webhooks:`: the listener address and the endpoints. Load lifts a plain list
//! (`webhooks: [...]`, as the spec's `webhooks.yaml` writes it) into
//! `webhooks.endpoints`, so both shapes merge across files.
//!
//! Whether an endpoint's plugin and command exist is checked by the runtime,
//! which reads manifests; here, everything the config alone decides.

use std::collections::{HashMap, HashSet};

use serde_yaml::Value;

use super::super::limits;
use super::super::yaml::describe;
use super::super::{
    ConfigError, DEFAULT_BODY_SIZE, NamedToken, WebhookAuth, WebhookEndpoint, Webhooks,
};
use super::api::read_listen;
use super::{Ctx, expect_list, expect_mapping, read_choice, read_size, read_text};

pub(super) const WEBHOOK_KEYS: &[&str] = &["listen", "endpoints"];

pub(super) const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "path",
    "plugin",
    "command",
    "secret_ref",
    "auth",
    "signature_header",
    "token_header",
    "max_body_size",
    "dedupe_header",
];

/// The webhook listener answers this path itself.
const HEALTH_PATH: &str = "/healthz";

pub(super) fn build_webhooks(
    ctx: &mut Ctx,
    value: Option<&Value>,
    tokens: &[NamedToken],
) -> Result<Webhooks, ConfigError> {
    let mut webhooks = Webhooks::default();
    let Some(value) = value else {
        return Ok(webhooks);
    };
    let Value::Mapping(map) = value else {
        return Err(ctx.error(
            "webhooks",
            format!(
                "expected a mapping (listen, endpoints) or a list of endpoints, found {}",
                describe(value)
            ),
        ));
    };
    let token_names: HashSet<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    let mut seen = Seen::default();
    for (key, path, value) in ctx.entries(map, "webhooks", WEBHOOK_KEYS) {
        if key == "listen" {
            webhooks.listen = Some(read_listen(ctx, value, &path)?);
            continue;
        }
        for (index, item) in expect_list(ctx, value, &path)?.iter().enumerate() {
            let origin = format!("{path}[{index}]");
            let endpoint = build_endpoint(ctx, item, origin, &token_names)?;
            seen.check(ctx, &webhooks.endpoints, &endpoint)?;
            webhooks.endpoints.push(endpoint);
        }
    }
    if webhooks.listen.is_none() && !webhooks.endpoints.is_empty() {
        ctx.warn(
            "webhooks",
            "endpoints are declared but `webhooks.listen` is not set; nothing serves them",
        );
    }
    Ok(webhooks)
}

fn build_endpoint(
    ctx: &mut Ctx,
    value: &Value,
    origin: String,
    tokens: &HashSet<&str>,
) -> Result<WebhookEndpoint, ConfigError> {
    let map = expect_mapping(ctx, value, &origin)?;
    let mut endpoint = WebhookEndpoint {
        name: String::new(),
        path: String::new(),
        plugin: String::new(),
        command: "handle".to_string(),
        secret_ref: String::new(),
        auth: WebhookAuth::Hmac,
        signature_header: "X-Ductile-Signature-256".to_string(),
        token_header: None,
        max_body_size: DEFAULT_BODY_SIZE,
        dedupe_header: None,
        file: ctx.provenance.file_of(&origin),
        origin: origin.clone(),
    };
    for (key, path, value) in ctx.entries(map, &origin, ENDPOINT_KEYS) {
        match key.as_str() {
            "name" => endpoint.name = read_word(ctx, value, &path)?,
            "path" => endpoint.path = read_path(ctx, value, &path)?,
            "plugin" => endpoint.plugin = read_word(ctx, value, &path)?,
            "command" => endpoint.command = read_word(ctx, value, &path)?,
            "secret_ref" => endpoint.secret_ref = read_secret_ref(ctx, value, &path, tokens)?,
            "auth" => {
                endpoint.auth = match read_choice(ctx, value, &path, &["hmac", "token"])?.as_str() {
                    "token" => WebhookAuth::Token,
                    _ => WebhookAuth::Hmac,
                };
            }
            "signature_header" => endpoint.signature_header = read_header(ctx, value, &path)?,
            "token_header" => endpoint.token_header = Some(read_header(ctx, value, &path)?),
            "max_body_size" => {
                endpoint.max_body_size = read_size(ctx, value, &path, limits::BODY_SIZE)?;
            }
            _ => endpoint.dedupe_header = Some(read_header(ctx, value, &path)?),
        }
    }
    for (field, value) in [
        ("name", &endpoint.name),
        ("path", &endpoint.path),
        ("plugin", &endpoint.plugin),
        ("secret_ref", &endpoint.secret_ref),
    ] {
        if value.is_empty() {
            return Err(ctx.error(&origin, format!("`{field}` is required")));
        }
    }
    if endpoint.token_header.is_some() && endpoint.auth != WebhookAuth::Token {
        return Err(ctx.error(
            &format!("{origin}.token_header"),
            "`token_header` applies only to `auth: token`",
        ));
    }
    Ok(endpoint)
}

/// The names and paths taken so far, each with the index of its endpoint.
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    paths: HashMap<String, usize>,
}

impl Seen {
    /// Names and paths are unique: a second endpoint on one path could never
    /// be reached, and a shared name would make logs ambiguous.
    fn check(
        &mut self,
        ctx: &Ctx,
        earlier: &[WebhookEndpoint],
        endpoint: &WebhookEndpoint,
    ) -> Result<(), ConfigError> {
        let index = earlier.len();
        let by_name = self.names.entry(endpoint.name.clone()).or_insert(index);
        let by_path = self.paths.entry(endpoint.path.clone()).or_insert(index);
        check_unique(ctx, earlier.get(*by_name), earlier.get(*by_path), endpoint)
    }
}

fn check_unique(
    ctx: &Ctx,
    same_name: Option<&WebhookEndpoint>,
    same_path: Option<&WebhookEndpoint>,
    endpoint: &WebhookEndpoint,
) -> Result<(), ConfigError> {
    if let Some(first) = same_name {
        return Err(ctx.error(
            &format!("{}.name", endpoint.origin),
            format!(
                "duplicate webhook name `{}` (also used by {} in {})",
                endpoint.name,
                first.origin,
                first.file.display()
            ),
        ));
    }
    if let Some(first) = same_path {
        return Err(ctx.error(
            &format!("{}.path", endpoint.origin),
            format!(
                "duplicate webhook path `{}` (also used by {} in {})",
                endpoint.path,
                first.origin,
                first.file.display()
            ),
        ));
    }
    Ok(())
}

/// A name, plugin or command: non-empty text without whitespace.
fn read_word(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let word = read_text(ctx, value, path)?;
    if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ctx.error(
            path,
            format!(
                "invalid value `{}`: expected a word without spaces",
                word.escape_debug()
            ),
        ));
    }
    Ok(word)
}

/// A request path matched exactly: `/`, then unreserved URL characters, no
/// `.` or `..` segment (a proxy would normalise it away) and no query.
fn read_path(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let text = read_text(ctx, value, path)?;
    let fail = |why: &str| {
        Err(ctx.error(
            path,
            format!("invalid webhook path `{}`: {why}", text.escape_debug()),
        ))
    };
    if !text.starts_with('/') {
        return fail("must start with `/`");
    }
    if text.contains(['?', '#']) {
        return fail("must not hold a query or fragment");
    }
    if text
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return fail("must not hold `.` or `..` segments");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~');
    if !text.chars().all(allowed) {
        return fail("use letters, digits, `/`, `-`, `_`, `.` and `~`");
    }
    if text == HEALTH_PATH {
        return fail("the webhook listener answers `/healthz` itself");
    }
    Ok(text)
}

/// An HTTP header name (RFC 9110 token characters).
fn read_header(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let name = read_text(ctx, value, path)?;
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(ctx.error(
            path,
            format!("invalid header name `{}`", name.escape_debug()),
        ));
    }
    Ok(name)
}

fn read_secret_ref(
    ctx: &Ctx,
    value: &Value,
    path: &str,
    tokens: &HashSet<&str>,
) -> Result<String, ConfigError> {
    let name = read_text(ctx, value, path)?;
    if tokens.contains(name.as_str()) {
        return Ok(name);
    }
    let mut names: Vec<&str> = tokens.iter().copied().collect();
    names.sort_unstable();
    let hint = match crate::suggest::closest(&name, &names) {
        Some(near) => format!("; did you mean `{near}`?"),
        None if names.is_empty() => " (no tokens are declared)".to_string(),
        None => String::new(),
    };
    Err(ctx.error(path, format!("`{name}` names no entry of `tokens`{hint}")))
}
