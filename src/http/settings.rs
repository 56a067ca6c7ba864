//! What the HTTP layer takes from a runtime snapshot: listener settings, the
//! token table and the webhook endpoints with their secrets resolved. Built
//! once per snapshot (tokens are hashed once), shared by every request thread.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{Runtime, RuntimeCell};

use super::Surface;

/// `api:` as the listeners use it.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Whether the API listener runs.
    pub enabled: bool,
    /// Its address.
    pub listen: String,
    /// Request threads per listener.
    pub threads: usize,
    /// Connections served at once per listener.
    pub max_connections: usize,
    /// Largest API request body.
    pub max_body_size: usize,
    /// Whether `/metrics` is served without a token.
    pub metrics_public: bool,
    /// Concurrent `/events` streams.
    pub max_event_streams: usize,
}

/// A webhook endpoint, ready to verify requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its name (`submitted_by = webhook:<name>`).
    pub name: String,
    /// The exact path it answers.
    pub path: String,
    /// Target plugin.
    pub plugin: String,
    /// Target command.
    pub command: String,
    /// The HMAC secret (or the token, with `auth: token`).
    pub secret: Vec<u8>,
    /// The header carrying the signature.
    pub signature_header: String,
    /// `auth: token`: the header that may carry the key instead of
    /// `Authorization: Bearer` (`signature_header` when unset).
    pub token_header: Option<String>,
    /// Largest body.
    pub max_body_size: usize,
    /// A header whose value becomes the job's dedupe key.
    pub dedupe_header: Option<String>,
    /// `auth: token`: a bearer token instead of a signature.
    pub token_auth: bool,
}

/// Everything the HTTP layer needs from one runtime snapshot.
#[derive(Debug)]
pub struct Settings {
    /// API listener settings.
    pub api: ApiSettings,
    /// `service.strict_mode`.
    pub strict: bool,
    /// Webhook listener address, when configured.
    pub webhooks_listen: Option<String>,
    /// Endpoints whose secret resolved.
    pub webhooks: Vec<Endpoint>,
}

thread_local! {
    /// This thread's settings of the snapshot it last asked about, rebuilt
    /// only when the snapshot changes (a reload). The snapshot is held too, so
    /// its address cannot be reused by a newer one while it is cached.
    static CACHE: RefCell<Option<(Arc<Runtime>, Arc<Settings>)>> = const { RefCell::new(None) };
}

impl Settings {
    /// The settings of `rt`.
    pub fn of(rt: &Arc<Runtime>) -> Arc<Settings> {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((cached, s)) = cache.as_ref() {
                if Arc::ptr_eq(cached, rt) {
                    return s.clone();
                }
            }
            let built = Arc::new(Settings::build(rt));
            *cache = Some((rt.clone(), built.clone()));
            built
        })
    }

    fn build(rt: &Runtime) -> Settings {
        let c = &rt.config;
        let tokens = &rt.tokens;
        let webhooks = c
            .webhooks
            .endpoints
            .iter()
            .filter_map(|e| {
                // Load validated every secret_ref; a token dropped for a bad
                // scope file leaves its endpoint unserved, said once here.
                let Some(secret) = tokens.secret(&e.secret_ref) else {
                    log::debug!(target: "http", "webhook `{}` is not served: its secret_ref `{}` has no usable key", e.name, e.secret_ref);
                    return None;
                };
                Some(Endpoint {
                    name: e.name.clone(),
                    path: e.path.clone(),
                    plugin: e.plugin.clone(),
                    command: e.command.clone(),
                    secret: secret.to_vec(),
                    signature_header: e.signature_header.clone(),
                    token_header: e.token_header.clone(),
                    max_body_size: e.max_body_size,
                    dedupe_header: e.dedupe_header.clone(),
                    token_auth: e.auth == crate::config::WebhookAuth::Token,
                })
            })
            .collect();
        Settings {
            api: ApiSettings {
                enabled: c.api.enabled,
                listen: c.api.listen.clone(),
                threads: c.api.threads,
                max_connections: c.api.max_connections,
                max_body_size: c.api.max_body_size,
                metrics_public: c.api.metrics_public,
                max_event_streams: c.api.max_event_streams,
            },
            strict: c.service.strict_mode,
            webhooks_listen: c.webhooks.listen.clone(),
            webhooks,
        }
    }

    /// The endpoint serving `path`.
    pub fn endpoint(&self, path: &str) -> Option<&Endpoint> {
        self.webhooks.iter().find(|e| e.path == path)
    }

    /// The limits a listener for `surface` enforces. Body limits follow
    /// reloads: they are looked up in the snapshot in force per request.
    pub fn limits(&self, surface: Surface, cell: Arc<RuntimeCell>) -> tiny_http::Limits {
        // Read straight from the config in force: connection threads come and
        // go, and none of them needs the rest of the settings.
        let max_body: Arc<dyn Fn(&str) -> usize + Send + Sync> = match surface {
            Surface::Api => Arc::new(move |_| cell.current().config.api.max_body_size),
            Surface::Webhooks => Arc::new(move |url: &str| {
                let path = url.split_once('?').map_or(url, |(p, _)| p);
                // An unknown path is answered 404 whatever its body.
                cell.current()
                    .config
                    .webhooks
                    .endpoints
                    .iter()
                    .find(|e| e.path == path)
                    .map_or(crate::config::DEFAULT_BODY_SIZE, |e| e.max_body_size)
            }),
        };
        tiny_http::Limits {
            max_connections: self.api.max_connections,
            max_line: 8 * 1024,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_body,
        }
    }
}
