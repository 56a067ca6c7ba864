//! Test support (the `testing` feature): an HTTPS server on 127.0.0.1 with the
//! certificates in `testdata/` (a test CA, a server certificate it signed for
//! 127.0.0.1 and localhost, an unrelated CA). Test code only: it unwraps.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A file of `testdata/` (`ca.pem`, `other-ca.pem`, `server.pem`, `server-key.pem`).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The certificates of a PEM fixture.
pub fn certs(name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(fixture(name))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A server answering every HTTPS request with `200` and `body`; counts the
/// connections that completed a handshake. The listener thread ends with the
/// test process (it holds nothing but the socket).
pub struct Server {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    /// Handshakes completed.
    pub handshakes: Arc<AtomicUsize>,
}

impl Server {
    /// Starts the server.
    pub fn start(body: &'static str) -> Server {
        let key = PrivateKeyDer::from_pem_file(fixture("server-key.pem")).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs("server.pem"), key)
                .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let seen = handshakes.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let Ok(conn) = ServerConnection::new(config.clone()) else {
                    return;
                };
                let mut tls = StreamOwned::new(conn, tcp);
                // A client that refuses the certificate ends the handshake
                // here; the next connection is served as usual.
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    continue;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Server { addr, handshakes }
    }

    /// `https://127.0.0.1:<port>/page`.
    pub fn url(&self) -> String {
        format!("https://{}/page", self.addr)
    }
}
