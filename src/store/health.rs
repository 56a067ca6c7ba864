//! `plugin_health`: the result of each plugin's `init` run. `init` runs once when
//! a plugin is first loaded or its definition changes; a failure marks the plugin
//! unhealthy (it is not retried) until the next change.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::clock::format_ts;

/// One plugin's init health.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Health {
    /// Plugin instance.
    pub plugin: String,
    /// Fingerprint of the definition init last ran for.
    pub fingerprint: String,
    /// pending | healthy | unhealthy.
    pub status: String,
    /// Why init failed.
    pub last_error: Option<String>,
    /// The init job.
    pub job_id: Option<String>,
    /// Last change.
    pub updated_at: String,
}

/// The stored fingerprint for a plugin, if init was ever scheduled for it.
pub fn fingerprint(conn: &Connection, plugin: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT fingerprint FROM plugin_health WHERE plugin = ?1")
        .and_then(|mut s| s.query_row([plugin], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(format!("read health of {plugin}"), e))
}

/// Marks an init run as pending for `fingerprint`.
pub fn pending(
    conn: &Connection,
    plugin: &str,
    fingerprint: &str,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO plugin_health (plugin, fingerprint, status, job_id, updated_at) VALUES (?1, ?2, 'pending', ?3, ?4)
         ON CONFLICT(plugin) DO UPDATE SET fingerprint = excluded.fingerprint, status = 'pending', last_error = NULL, job_id = excluded.job_id, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![plugin, fingerprint, job_id, format_ts(now)]))
    .map_err(|e| StoreError::sqlite(format!("record init of {plugin}"), e))?;
    Ok(())
}

/// Records an init job's result (inside its completion transaction).
pub fn record_init(
    conn: &Connection,
    plugin: &str,
    job_id: &str,
    succeeded: bool,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let status = if succeeded { "healthy" } else { "unhealthy" };
    if !succeeded {
        log::error!(plugin = plugin, job_id = job_id; "init failed, plugin marked unhealthy: {}", error.unwrap_or("unknown error"));
    }
    conn.prepare_cached("UPDATE plugin_health SET status = ?2, last_error = ?3, updated_at = ?4 WHERE plugin = ?1 AND job_id = ?5")
        .and_then(|mut s| s.execute(params![plugin, status, error, format_ts(now), job_id]))
        .map_err(|e| StoreError::sqlite(format!("record init result of {plugin}"), e))?;
    Ok(())
}

/// Every plugin's health row.
pub fn all(conn: &Connection) -> Result<Vec<Health>, StoreError> {
    conn.prepare_cached("SELECT plugin, fingerprint, status, last_error, job_id, updated_at FROM plugin_health ORDER BY plugin")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(Health {
                    plugin: r.get(0)?,
                    fingerprint: r.get(1)?,
                    status: r.get(2)?,
                    last_error: r.get(3)?,
                    job_id: r.get(4)?,
                    updated_at: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect())
        })
        .map_err(|e| StoreError::sqlite("read plugin health", e))
}
