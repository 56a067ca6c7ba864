//! Remote event relay settings (18-remote-event-relay): the named outbound
//! targets of `relay-instances.yaml` and the trusted inbound peers of
//! `relay-ingress.yaml`, with every `secret_ref` already resolved to its key.

use std::path::PathBuf;
use std::time::Duration;

use super::{Breaker, Retry};
use crate::secret::Secret;

/// The longest delay between two delivery attempts, whatever the backoff says:
/// a receiver that comes back is reached within this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// An instance's retry policy when `retry:` is not set.
pub fn default_retry() -> Retry {
    Retry {
        max_attempts: 30,
        backoff_base: Duration::from_secs(5),
    }
}

/// An instance's breaker when `circuit_breaker:` is not set.
pub fn default_breaker() -> Breaker {
    Breaker {
        threshold: 5,
        reset_after: Duration::from_secs(30),
    }
}

/// Both relay files, validated.
#[derive(Debug, Clone, Default)]
pub struct RelayConf {
    /// `instances:`: where this instance may send events, in declaration order.
    pub instances: Vec<Instance>,
    /// `remote_ingress:`: the receiving side, when declared.
    pub ingress: Option<Ingress>,
}

impl RelayConf {
    /// The outbound instance called `name`.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }
}

/// One outbound relay target.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Lower-case hyphenated name, unique.
    pub name: String,
    /// Whether sends to it are allowed (default true).
    pub enabled: bool,
    /// Absolute `http`/`https` URL of the receiver, without a trailing `/`.
    pub base_url: String,
    /// The receiver's ingress path for this sender (`/ingest/peer/home-primary`).
    pub ingress_path: String,
    /// The `tokens:` entry whose key signs requests.
    pub secret_ref: String,
    /// The resolved shared secret.
    pub secret: Secret<String>,
    /// Sent as `X-Ductile-Key-Id`, when set.
    pub key_id: Option<String>,
    /// Per-request timeout (default 10s).
    pub timeout: Duration,
    /// Event types that may be sent; empty allows every type.
    pub allow: Vec<String>,
    /// Whether plain `http://` to a non-loopback host is allowed (default false).
    pub allow_insecure: bool,
    /// Delivery attempts and their backoff (default 30 attempts from 5s, each
    /// delay capped at [`MAX_BACKOFF`]: about two hours of trying).
    pub retry: Retry,
    /// When to stop trying for a while (default 5 failed attempts, 30s cooldown).
    pub circuit_breaker: Breaker,
    /// The file that declared it.
    pub file: PathBuf,
    /// Its key path (`instances[0]`).
    pub origin: String,
}

impl Instance {
    /// Whether `event_type` passes `allow`.
    pub fn allows(&self, event_type: &str) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|a| a == event_type)
    }

    /// The full URL requests are posted to.
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.ingress_path)
    }

    /// The path the receiver sees and the signature covers: the base URL's
    /// own path (a receiver behind a proxy prefix) followed by `ingress_path`.
    pub fn signed_path(&self) -> String {
        let after_scheme = self.base_url.split_once("://").map_or("", |(_, r)| r);
        let prefix = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
        format!("{prefix}{}", self.ingress_path)
    }
}

/// `remote_ingress:`.
#[derive(Debug, Clone)]
pub struct Ingress {
    /// Root path on the API listener; a peer posts to `<listen_path>/<peer>`.
    pub listen_path: String,
    /// Largest request body (default 1 MiB).
    pub max_body_size: usize,
    /// How far a request's timestamp may be from this clock (default 5m).
    pub allowed_clock_skew: Duration,
    /// Whether `X-Ductile-Key-Id` is required (default true).
    pub require_key_id: bool,
    /// Trusted peers, in declaration order; names are unique.
    pub peers: Vec<Peer>,
}

impl Ingress {
    /// The peer called `name`.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }
}

/// One trusted inbound peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Lower-case hyphenated name: the last path segment and `X-Ductile-Peer`.
    pub name: String,
    /// Whether its requests are accepted (default true).
    pub enabled: bool,
    /// Valid keys, each with its id; two during a rotation.
    pub keys: Vec<PeerKey>,
    /// Event types accepted; empty accepts every type.
    pub accept: Vec<String>,
    /// Baggage keys that may seed the local root's context.
    pub baggage_allow: Vec<String>,
    /// The file that declared it.
    pub file: PathBuf,
    /// Its key path (`remote_ingress.peers[0]`).
    pub origin: String,
}

impl Peer {
    /// Whether `event_type` passes `accept`.
    pub fn accepts(&self, event_type: &str) -> bool {
        self.accept.is_empty() || self.accept.iter().any(|a| a == event_type)
    }
}

/// One shared key of a peer.
#[derive(Debug, Clone)]
pub struct PeerKey {
    /// The id presented in `X-Ductile-Key-Id`, when set.
    pub key_id: Option<String>,
    /// The `tokens:` entry it came from.
    pub secret_ref: String,
    /// The resolved shared secret.
    pub secret: Secret<String>,
}
