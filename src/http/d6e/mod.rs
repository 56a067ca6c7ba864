//! The D6E SQL callback: `POST /api/v1/workspaces/{id}/sql`, served to one
//! job's container on a side listener that lives only as long as the job.
//!
//! Owns: the listener, the per-job token and the request checks (bearer
//! token, then the workspace and STF headers and path, then the statement).
//! Must not: serve any other route, or outlive the [`Session`] that owns it.

pub mod sql;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde_json::{Value, json};
use tiny_http::{Header, Method, Response, Server};

/// Largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;

/// What one job's token grants: statements on one database, for one
/// workspace and one STF.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The workspace id the path and `X-Workspace-ID` must name.
    pub workspace_id: String,
    /// The STF id `X-STF-ID` must name.
    pub stf_id: String,
    /// The workspace's SQLite file.
    pub database: PathBuf,
}

/// A running callback listener; dropping it stops the listener and
/// invalidates the token.
pub struct Session {
    token: String,
    addr: SocketAddr,
    server: Arc<Server>,
    closed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// Listens on `bind` (an ephemeral port) for the job granted `grant`.
    pub fn start(bind: IpAddr, grant: Grant) -> Result<Session, String> {
        let server = Server::http(SocketAddr::new(bind, 0))
            .map_err(|e| format!("cannot listen on {bind} for the SQL callback: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| "the SQL callback listener has no IP address".to_string())?;
        let server = Arc::new(server);
        let token = crate::http::auth::new_secret();
        let closed = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, closed, token) = (Arc::clone(&server), Arc::clone(&closed), token.clone());
            std::thread::Builder::new()
                .name("d6e-callback".into())
                .spawn(move || serve(&server, &closed, &token, &grant))
                .map_err(|e| format!("cannot start the SQL callback thread: {e}"))?
        };
        Ok(Session {
            token,
            addr,
            server,
            closed,
            thread: Some(thread),
        })
    }

    /// The job's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the listener is bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &Server, closed: &AtomicBool, token: &str, grant: &Grant) {
    for mut req in server.incoming_requests() {
        let (status, body) = if closed.load(Ordering::SeqCst) {
            (
                401,
                json!({"error": "the job this token belonged to has ended"}),
            )
        } else {
            answer(&mut req, token, grant)
        };
        let header = Header::from_bytes("Content-Type", "application/json").ok();
        let mut resp = Response::from_string(body.to_string()).with_status_code(status);
        if let Some(h) = header {
            resp = resp.with_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::debug!("SQL callback: cannot answer: {e}");
        }
    }
}

fn header<'a>(req: &'a tiny_http::Request, name: &'static str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Compares without an early exit, so timing does not leak a token prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn answer(req: &mut tiny_http::Request, token: &str, grant: &Grant) -> (u16, Value) {
    let url = req.url().split('?').next().unwrap_or_default().to_string();
    let workspace = url
        .strip_prefix("/api/v1/workspaces/")
        .and_then(|r| r.strip_suffix("/sql"))
        .filter(|w| !w.contains('/'));
    let Some(workspace) = workspace else {
        return (404, json!({"error": "not found"}));
    };
    if *req.method() != Method::Post {
        return (405, json!({"error": "only POST is served"}));
    }
    let bearer = header(req, "Authorization").and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|b| same(b.trim(), token)) {
        return (401, json!({"error": "missing or invalid bearer token"}));
    }
    if workspace != grant.workspace_id
        || header(req, "X-Workspace-ID") != Some(grant.workspace_id.as_str())
    {
        return (
            403,
            json!({"error": "the token is not valid for this workspace"}),
        );
    }
    if header(req, "X-STF-ID") != Some(grant.stf_id.as_str()) {
        return (403, json!({"error": "the token is not valid for this STF"}));
    }
    let mut body = Vec::new();
    if let Err(e) = req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body) {
        return (400, json!({"error": format!("cannot read the body: {e}")}));
    }
    if body.len() as u64 > MAX_BODY {
        return (
            400,
            json!({"error": format!("the body is over {MAX_BODY} bytes")}),
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (400, json!({"error": format!("the body is not JSON: {e}")})),
    };
    let Some(statement) = v.get("sql").and_then(Value::as_str) else {
        return (400, json!({"error": "`sql` (a string) is required"}));
    };
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    match sql::execute(&grant.database, statement, &params) {
        Ok(out) => (200, out),
        Err(sql::SqlError::Refused(why)) => (403, json!({"error": why})),
        Err(sql::SqlError::Invalid(why)) => (400, json!({"error": why})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    fn post(addr: SocketAddr, headers: &[(&str, &str)], path: &str, body: &str) -> (u16, Value) {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut req = format!("POST {path} HTTP/1.0\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    #[test]
    fn only_the_jobs_token_workspace_and_stf_are_served_while_it_runs() {
        let dir = std::env::temp_dir().join(format!("ductile-d6e-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("ws.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let grant = Grant {
            workspace_id: "w1".into(),
            stf_id: "s1".into(),
            database: db,
        };
        let session = Session::start(IpAddr::from([127, 0, 0, 1]), grant).unwrap();
        let addr = session.addr();
        let bearer = format!("Bearer {}", session.token());
        let ok = [
            ("Authorization", bearer.as_str()),
            ("X-Workspace-ID", "w1"),
            ("X-STF-ID", "s1"),
        ];
        let path = "/api/v1/workspaces/w1/sql";
        let select = r#"{"sql":"SELECT x FROM t"}"#;
        assert_eq!(
            post(addr, &ok, path, select),
            (200, json!({"rows": [{"x": 7}], "affected_rows": 0}))
        );
        let wrong_token = [("Authorization", "Bearer nope"), ok[1], ok[2]];
        assert_eq!(post(addr, &wrong_token, path, select).0, 401);
        assert_eq!(post(addr, &ok[1..], path, select).0, 401);
        let other_stf = [ok[0], ok[1], ("X-STF-ID", "s2")];
        assert_eq!(post(addr, &other_stf, path, select).0, 403);
        let other_ws = [ok[0], ("X-Workspace-ID", "w2"), ok[2]];
        assert_eq!(post(addr, &other_ws, path, select).0, 403);
        assert_eq!(post(addr, &ok, "/api/v1/workspaces/w2/sql", select).0, 403);
        assert_eq!(post(addr, &ok, "/api/v1/jobs", select).0, 404);
        assert_eq!(post(addr, &ok, path, "{").0, 400);
        let (status, body) = post(addr, &ok, path, r#"{"sql":"DROP TABLE t"}"#);
        assert_eq!(status, 403);
        assert!(body["error"].as_str().unwrap().contains("DROP"), "{body}");
        drop(session);
        // The port may have been handed to a parallel test's listener since;
        // whatever listens there now must not serve the job's token.
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let req = format!(
                "POST {path} HTTP/1.0\r\nAuthorization: {bearer}\r\nX-Workspace-ID: w1\r\nX-STF-ID: s1\r\nContent-Length: {}\r\n\r\n{select}",
                select.len()
            );
            let _ = s.write_all(req.as_bytes());
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(!out.contains("affected_rows"), "still served: {out}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
