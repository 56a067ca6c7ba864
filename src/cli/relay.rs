//! `ductile relay peers`: the trusted inbound peers of `relay-ingress.yaml`
//! beside what the ledger knows of each (last accepted event, refusals). It
//! reads the config and the ledger directly, with or without a daemon.

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::config::relay::Peer;
use crate::store;

/// `relay peers [--json]`.
pub fn peers(args: &Args) -> Result<(), CliError> {
    let loaded = crate::config::load(&super::config_root(args)?)?;
    let config = loaded.config;
    let Some(ingress) = &config.relay.ingress else {
        if args.json {
            output::json(&json!({"listen_path": null, "peers": []}));
        } else {
            output::text("no relay ingress is configured (`remote_ingress` in relay-ingress.yaml)");
        }
        return Ok(());
    };
    let conn = if config.state.path.exists() {
        Some(store::open_read_only(&config.state.path)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for p in &ingress.peers {
        let (last, refused) = match &conn {
            Some(c) => ledger_view(c, p)?,
            None => (None, 0),
        };
        rows.push(json!({
            "name": p.name,
            "enabled": p.enabled,
            "path": format!("{}/{}", ingress.listen_path, p.name),
            "key_ids": p.keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
            "accept": p.accept,
            "baggage_allow": p.baggage_allow,
            "last_accepted_at": last,
            "refusals": refused,
        }));
    }
    if args.json {
        output::json(&json!({"listen_path": ingress.listen_path, "peers": rows}));
        return Ok(());
    }
    let mut out = format!(
        "{:<20} {:<8} {:<12} {:<24} {:>8}  PATH\n",
        "PEER", "ENABLED", "KEY IDS", "LAST ACCEPTED", "REFUSED"
    );
    for r in &rows {
        let ids: Vec<&str> = r["key_ids"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap_or("-")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:<8} {:<12} {:<24} {:>8}  {}\n",
            r["name"].as_str().unwrap_or(""),
            if r["enabled"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            },
            ids.join(","),
            r["last_accepted_at"].as_str().unwrap_or("never"),
            r["refusals"],
            r["path"].as_str().unwrap_or("")
        ));
    }
    output::text(&out);
    Ok(())
}

/// The peer's last accepted event and how many requests naming it were refused.
fn ledger_view(conn: &rusqlite::Connection, p: &Peer) -> Result<(Option<String>, i64), CliError> {
    let scope = format!("relay:{}", p.name);
    let last: Option<String> = conn
        .query_row(
            "SELECT max(created_at) FROM job_queue WHERE plugin = 'relay' AND submitted_by = ?1",
            [&scope],
            |r| r.get(0),
        )
        .map_err(|e| store::StoreError::sqlite("read the last relay acceptance", e))?;
    let refused: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM decisions WHERE kind = 'relay_rejected' AND scope = ?1",
            [&scope],
            |r| r.get(0),
        )
        .map_err(|e| store::StoreError::sqlite("count relay refusals", e))?;
    Ok((last, refused))
}
