//! Doctor's relay checks: each outbound instance's outbox (an event waiting
//! long means the receiver is not taking it), each inbound peer's clock skew
//! on its last accepted request, and on demand (`--probe`) whether each
//! receiver answers at all. Secrets need no check here: a `secret_ref` that
//! does not resolve is a config error, so a config that loaded has them all.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::Check;
use crate::clock::parse_ts;
use crate::relay::outbox;
use crate::runtime::Runtime;
use crate::store;

/// An event waiting this long in an outbox is worth a warning.
const STALE_OUTBOX: Duration = Duration::from_secs(600);

/// `relay.<instance>` per outbound instance, `relay_peer.<peer>` per inbound peer.
pub(super) fn checks(rt: &Runtime, conn: &Connection, now: DateTime<Utc>) -> Vec<Check> {
    let relay = &rt.config.relay;
    let mut out = Vec::new();
    for i in &relay.instances {
        let name = format!("relay.{}", i.name);
        if !i.enabled {
            out.push(Check::skipped(name, "the instance is disabled"));
            continue;
        }
        let (plugin, command) = outbox::breaker_key(&i.name);
        let view = match (
            store::relay::outbox(conn, &i.name),
            store::breakers::find(conn, &plugin, command),
        ) {
            (Ok(v), Ok(b)) => (v, b),
            (Err(e), _) | (_, Err(e)) => {
                out.push(Check::fail(
                    name,
                    format!("cannot read the outbox: {e}"),
                    "run `ductile system selfcheck` with the daemon stopped",
                ));
                continue;
            }
        };
        let (o, breaker) = view;
        let why = match (&o.last_error_at, &o.last_error) {
            (Some(at), Some(e)) => format!("; last error at {at}: {e}"),
            _ => String::new(),
        };
        let remedy = format!(
            "check that {} answers (`ductile system doctor --probe`) and `ductile relay status`; the receiver's `ductile relay peers` shows why it refuses",
            i.url()
        );
        if breaker.as_ref().is_some_and(|b| b.state == "open") {
            out.push(Check::fail(
                name,
                format!(
                    "breaker open: deliveries paused, {} event(s) waiting{why}",
                    o.queued + o.running
                ),
                remedy,
            ));
            continue;
        }
        let oldest = o.oldest_queued_at.as_deref().and_then(parse_ts);
        let stale = oldest.is_some_and(|t| {
            now.signed_duration_since(t).to_std().unwrap_or_default() > STALE_OUTBOX
        });
        if stale {
            out.push(Check::warn(
                name,
                format!(
                    "{} event(s) waiting, the oldest since {}{why}",
                    o.queued,
                    o.oldest_queued_at.as_deref().unwrap_or("-")
                ),
                remedy,
            ));
        } else {
            out.push(Check::ok(
                name,
                format!(
                    "secret `{}` resolved; {} delivered, {} waiting, {} given up; last success {}",
                    i.secret_ref,
                    o.delivered,
                    o.queued + o.running,
                    o.failed,
                    o.last_success_at.as_deref().unwrap_or("never")
                ),
            ));
        }
    }
    if let Some(ingress) = &relay.ingress {
        let limit = ingress.allowed_clock_skew.as_secs() as i64;
        for p in ingress.peers.iter().filter(|p| p.enabled) {
            let name = format!("relay_peer.{}", p.name);
            match store::relay::last_acceptance(conn, &p.name) {
                Err(e) => out.push(Check::fail(
                    name,
                    format!("cannot read the ledger: {e}"),
                    "run `ductile system selfcheck` with the daemon stopped",
                )),
                Ok(None) => out.push(Check::ok(
                    name,
                    format!("{} key(s) resolved; no event accepted yet", p.keys.len()),
                )),
                Ok(Some((at, skew))) => {
                    let skew = skew.unwrap_or(0);
                    let detail =
                        format!("last accepted at {at}, clock skew {skew:+} s (allowed {limit} s)");
                    if skew.abs() * 2 > limit {
                        out.push(Check::warn(
                            name,
                            detail,
                            "the two clocks are drifting apart: run NTP (e.g. systemd-timesyncd) on both machines before requests turn into `stale_timestamp` refusals",
                        ));
                    } else {
                        out.push(Check::ok(name, detail));
                    }
                }
            }
        }
    }
    out
}

/// `relay_probe.<instance>`: does the receiver's API answer `GET /healthz`?
/// Run only on request: it is network I/O to another machine.
pub fn probes(rt: &Runtime) -> Vec<Check> {
    rt.config
        .relay
        .instances
        .iter()
        .filter(|i| i.enabled)
        .map(|i| {
            let name = format!("relay_probe.{}", i.name);
            let url = format!("{}/healthz", i.base_url);
            match crate::relay::send::probe(&url, i.timeout) {
                Ok(status) if status < 500 => {
                    Check::ok(name, format!("{url} answered {status}"))
                }
                Ok(status) => Check::fail(
                    name,
                    format!("{url} answered {status}"),
                    "the receiver is up but failing: see its `ductile system doctor`",
                ),
                Err(e) => Check::fail(
                    name,
                    format!("{url}: {e}"),
                    "check the receiver runs with `api.enabled: true` on the address `base_url` names, and that nothing between blocks it",
                ),
            }
        })
        .collect()
}
