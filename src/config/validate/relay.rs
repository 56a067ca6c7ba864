//! `instances:` (`relay-instances.yaml`) and `remote_ingress:`
//! (`relay-ingress.yaml`): names, URLs, paths and every `secret_ref`,
//! checked against the `tokens:` already built.

use std::time::Duration;

use serde_yaml::Value;

use super::super::duration;
use super::super::limits;
use super::super::relay::{Ingress, Instance, Peer, PeerKey, RelayConf};
use super::super::{ConfigError, DEFAULT_BODY_SIZE, NamedToken};
use super::{Ctx, expect_list, expect_mapping, read_flag, read_size, read_strings, read_text};

const INSTANCE_KEYS: &[&str] = &[
    "name",
    "enabled",
    "base_url",
    "ingress_path",
    "secret_ref",
    "key_id",
    "timeout",
    "allow",
    "allow_insecure",
    "retry",
    "circuit_breaker",
];

const INGRESS_KEYS: &[&str] = &[
    "listen_path",
    "max_body_size",
    "allowed_clock_skew",
    "require_key_id",
    "peers",
];

const PEER_KEYS: &[&str] = &[
    "name",
    "enabled",
    "secret_ref",
    "key_id",
    "keys",
    "accept",
    "baggage",
];

const KEY_KEYS: &[&str] = &["key_id", "secret_ref"];

/// Builds both relay sections.
pub(super) fn build_relay(
    ctx: &mut Ctx,
    instances: Option<&Value>,
    ingress: Option<&Value>,
    tokens: &[NamedToken],
) -> Result<RelayConf, ConfigError> {
    let mut relay = RelayConf::default();
    if let Some(value) = instances {
        for (index, item) in expect_list(ctx, value, "instances")?.iter().enumerate() {
            let origin = format!("instances[{index}]");
            let instance = build_instance(ctx, item, &origin, tokens)?;
            if let Some(first) = relay.instance(&instance.name) {
                return Err(ctx.error(
                    &format!("{origin}.name"),
                    format!(
                        "duplicate relay instance `{}` (also {} in {})",
                        instance.name,
                        first.origin,
                        first.file.display()
                    ),
                ));
            }
            relay.instances.push(instance);
        }
    }
    if let Some(value) = ingress {
        relay.ingress = Some(build_ingress(ctx, value, tokens)?);
    }
    Ok(relay)
}

fn build_instance(
    ctx: &mut Ctx,
    value: &Value,
    origin: &str,
    tokens: &[NamedToken],
) -> Result<Instance, ConfigError> {
    let map = expect_mapping(ctx, value, origin)?;
    let mut name = None;
    let mut enabled = true;
    let mut base_url = None;
    let mut ingress_path = None;
    let mut secret_ref = None;
    let mut key_id = None;
    let mut timeout = Duration::from_secs(10);
    let mut allow = Vec::new();
    let mut allow_insecure = false;
    let mut retry = super::super::relay::default_retry();
    let mut circuit_breaker = super::super::relay::default_breaker();
    for (key, path, value) in ctx.entries(map, origin, INSTANCE_KEYS) {
        match key.as_str() {
            "name" => name = Some(read_name(ctx, value, &path)?),
            "enabled" => enabled = read_flag(ctx, value, &path)?,
            "base_url" => base_url = Some(read_text(ctx, value, &path)?),
            "ingress_path" => ingress_path = Some(read_path(ctx, value, &path)?),
            "secret_ref" => secret_ref = Some((read_text(ctx, value, &path)?, path)),
            "key_id" => key_id = Some(read_key_id(ctx, value, &path)?),
            "timeout" => timeout = read_duration(ctx, value, &path)?,
            "allow" => allow = read_event_types(ctx, value, &path)?,
            "retry" => {
                super::plugins::read_retry(ctx, value, &path, &mut retry)?;
            }
            "circuit_breaker" => {
                super::plugins::read_breaker(ctx, value, &path, &mut circuit_breaker)?
            }
            _ => allow_insecure = read_flag(ctx, value, &path)?,
        }
    }
    let name = name.ok_or_else(|| ctx.error(origin, "`name` is required"))?;
    let base_url = base_url.ok_or_else(|| ctx.error(origin, "`base_url` is required"))?;
    let ingress_path =
        ingress_path.ok_or_else(|| ctx.error(origin, "`ingress_path` is required"))?;
    let (secret_ref, ref_path) =
        secret_ref.ok_or_else(|| ctx.error(origin, "`secret_ref` is required"))?;
    let secret = resolve(ctx, &secret_ref, &ref_path, tokens)?;
    let base_url = check_base_url(
        ctx,
        &base_url,
        &format!("{origin}.base_url"),
        allow_insecure,
    )?;
    Ok(Instance {
        name,
        enabled,
        base_url,
        ingress_path,
        secret_ref,
        secret,
        key_id,
        timeout,
        allow,
        allow_insecure,
        retry,
        circuit_breaker,
        file: ctx.provenance.file_of(origin),
        origin: origin.to_string(),
    })
}

fn build_ingress(
    ctx: &mut Ctx,
    value: &Value,
    tokens: &[NamedToken],
) -> Result<Ingress, ConfigError> {
    let map = expect_mapping(ctx, value, "remote_ingress")?;
    let mut ingress = Ingress {
        listen_path: String::new(),
        max_body_size: DEFAULT_BODY_SIZE,
        allowed_clock_skew: Duration::from_secs(300),
        require_key_id: true,
        peers: Vec::new(),
    };
    for (key, path, value) in ctx.entries(map, "remote_ingress", INGRESS_KEYS) {
        match key.as_str() {
            "listen_path" => {
                let text = read_path(ctx, value, &path)?;
                ingress.listen_path = text.trim_end_matches('/').to_string();
                if ingress.listen_path.is_empty() {
                    return Err(ctx.error(&path, "must not be `/`: it would shadow the API"));
                }
            }
            "max_body_size" => {
                ingress.max_body_size = read_size(ctx, value, &path, limits::BODY_SIZE)?;
            }
            "allowed_clock_skew" => ingress.allowed_clock_skew = read_duration(ctx, value, &path)?,
            "require_key_id" => ingress.require_key_id = read_flag(ctx, value, &path)?,
            _ => {
                for (index, item) in expect_list(ctx, value, &path)?.iter().enumerate() {
                    let origin = format!("{path}[{index}]");
                    let peer = build_peer(ctx, item, &origin, tokens)?;
                    if let Some(first) = ingress.peer(&peer.name) {
                        return Err(ctx.error(
                            &format!("{origin}.name"),
                            format!(
                                "duplicate relay peer `{}` (also {} in {})",
                                peer.name,
                                first.origin,
                                first.file.display()
                            ),
                        ));
                    }
                    ingress.peers.push(peer);
                }
            }
        }
    }
    if ingress.listen_path.is_empty() {
        return Err(ctx.error("remote_ingress", "`listen_path` is required"));
    }
    if ingress.require_key_id {
        if let Some(p) = ingress
            .peers
            .iter()
            .find(|p| p.keys.iter().any(|k| k.key_id.is_none()))
        {
            return Err(ctx.error(
                &p.origin,
                "`require_key_id` is true, so every key of a peer needs a `key_id`",
            ));
        }
    }
    Ok(ingress)
}

fn build_peer(
    ctx: &mut Ctx,
    value: &Value,
    origin: &str,
    tokens: &[NamedToken],
) -> Result<Peer, ConfigError> {
    let map = expect_mapping(ctx, value, origin)?;
    let mut name = None;
    let mut enabled = true;
    let mut secret_ref = None;
    let mut key_id = None;
    let mut keys = Vec::new();
    let mut accept = Vec::new();
    let mut baggage_allow = Vec::new();
    for (key, path, value) in ctx.entries(map, origin, PEER_KEYS) {
        match key.as_str() {
            "name" => name = Some(read_name(ctx, value, &path)?),
            "enabled" => enabled = read_flag(ctx, value, &path)?,
            "secret_ref" => secret_ref = Some((read_text(ctx, value, &path)?, path)),
            "key_id" => key_id = Some(read_key_id(ctx, value, &path)?),
            "keys" => {
                for (index, item) in expect_list(ctx, value, &path)?.iter().enumerate() {
                    keys.push(build_key(ctx, item, &format!("{path}[{index}]"), tokens)?);
                }
            }
            "accept" => accept = read_event_types(ctx, value, &path)?,
            _ => {
                let map = expect_mapping(ctx, value, &path)?;
                for (_, sub, value) in ctx.entries(map, &path, &["allow"]) {
                    baggage_allow = read_strings(ctx, value, &sub)?;
                }
            }
        }
    }
    let name = name.ok_or_else(|| ctx.error(origin, "`name` is required"))?;
    if let Some((secret_ref, path)) = secret_ref {
        let secret = resolve(ctx, &secret_ref, &path, tokens)?;
        keys.insert(
            0,
            PeerKey {
                key_id,
                secret_ref,
                secret,
            },
        );
    } else if key_id.is_some() {
        return Err(ctx.error(origin, "`key_id` needs a `secret_ref` beside it"));
    }
    if keys.is_empty() {
        return Err(ctx.error(origin, "`secret_ref` (or `keys`) is required"));
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|e| e.key_id == k.key_id) {
            return Err(ctx.error(
                origin,
                format!(
                    "key id `{}` is given twice",
                    k.key_id.as_deref().unwrap_or("(none)")
                ),
            ));
        }
    }
    Ok(Peer {
        name,
        enabled,
        keys,
        accept,
        baggage_allow,
        file: ctx.provenance.file_of(origin),
        origin: origin.to_string(),
    })
}

fn build_key(
    ctx: &mut Ctx,
    value: &Value,
    origin: &str,
    tokens: &[NamedToken],
) -> Result<PeerKey, ConfigError> {
    let map = expect_mapping(ctx, value, origin)?;
    let mut key_id = None;
    let mut secret_ref = None;
    for (key, path, value) in ctx.entries(map, origin, KEY_KEYS) {
        if key == "key_id" {
            key_id = Some(read_key_id(ctx, value, &path)?);
        } else {
            secret_ref = Some((read_text(ctx, value, &path)?, path));
        }
    }
    let (secret_ref, path) =
        secret_ref.ok_or_else(|| ctx.error(origin, "`secret_ref` is required"))?;
    let secret = resolve(ctx, &secret_ref, &path, tokens)?;
    Ok(PeerKey {
        key_id,
        secret_ref,
        secret,
    })
}

/// A lower-case hyphenated name (19-config-reference §3.4): it is a URL path
/// segment and a header value, so nothing else is accepted.
fn read_name(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let name = read_text(ctx, value, path)?;
    if is_name(&name) {
        return Ok(name);
    }
    Err(ctx.error(
        path,
        format!(
            "invalid name `{}`: use lower-case letters and digits joined by single hyphens (`home-primary`)",
            name.escape_debug()
        ),
    ))
}

/// `^[a-z0-9]+(?:-[a-z0-9]+)*$`.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn read_key_id(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let id = read_text(ctx, value, path)?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok) {
        return Err(ctx.error(
            path,
            format!(
                "invalid key id `{}`: 1 to 64 letters, digits, `-`, `_` or `.`",
                id.escape_debug()
            ),
        ));
    }
    Ok(id)
}

fn read_event_types(ctx: &Ctx, value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    let types = read_strings(ctx, value, path)?;
    for (index, t) in types.iter().enumerate() {
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ctx.error(
                &format!("{path}[{index}]"),
                format!("invalid event type `{}`", t.escape_debug()),
            ));
        }
    }
    Ok(types)
}

fn read_duration(ctx: &Ctx, value: &Value, path: &str) -> Result<Duration, ConfigError> {
    let text = read_text(ctx, value, path)?;
    let d = duration::parse(&text).map_err(|m| ctx.error(path, m))?;
    if d.is_zero() || d > Duration::from_secs(24 * 3600) {
        return Err(ctx.error(
            path,
            format!("`{text}` is out of range: expected more than 0s and at most 24h"),
        ));
    }
    Ok(d)
}

/// A request path: `/`, then letters, digits, `/`, `-`, `_`, `.` and `~`,
/// without `.`/`..` segments or a query.
fn read_path(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let text = read_text(ctx, value, path)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~');
    let dotted = text.split('/').any(|s| s == "." || s == "..");
    if !text.starts_with('/') || dotted || !text.chars().all(allowed) {
        return Err(ctx.error(
            path,
            format!(
                "invalid path `{}`: start with `/` and use letters, digits, `/`, `-`, `_`, `.` and `~`",
                text.escape_debug()
            ),
        ));
    }
    Ok(text)
}

/// An absolute `http`/`https` URL without path, query or credentials;
/// plain `http` only to a loopback host unless `allow_insecure`, since the
/// body travels in the clear.
fn check_base_url(
    ctx: &Ctx,
    url: &str,
    path: &str,
    allow_insecure: bool,
) -> Result<String, ConfigError> {
    let fail = |why: &str| {
        Err(ctx.error(
            path,
            format!("invalid base_url `{}`: {why}", url.escape_debug()),
        ))
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        _ => return fail("expected an absolute http:// or https:// URL"),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() {
        return fail("it has no host");
    }
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return fail("give scheme, host and port only; the path belongs in `ingress_path`");
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if scheme == "http" && !loopback && !allow_insecure {
        return fail(
            "plain http is allowed only to a loopback host; use https or set `allow_insecure: true`",
        );
    }
    Ok(format!("{scheme}://{authority}"))
}

fn resolve(
    ctx: &Ctx,
    name: &str,
    path: &str,
    tokens: &[NamedToken],
) -> Result<crate::secret::Secret<String>, ConfigError> {
    if let Some(t) = tokens.iter().find(|t| t.name == name) {
        return Ok(t.key.clone());
    }
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    let hint = match crate::suggest::closest(name, &names) {
        Some(near) => format!("; did you mean `{near}`?"),
        None if names.is_empty() => " (no tokens are declared)".to_string(),
        None => String::new(),
    };
    Err(ctx.error(path, format!("`{name}` names no entry of `tokens`{hint}")))
}

#[cfg(test)]
mod tests {
    use super::is_name;

    #[test]
    fn names_are_lower_case_hyphenated() {
        for ok in ["lab", "home-primary", "vps-2"] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "Home", "home_primary", "-a", "a-", "a--b", "a b"] {
            assert!(!is_name(bad), "{bad}");
        }
    }
}
