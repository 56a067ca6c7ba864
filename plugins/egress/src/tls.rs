//! HTTPS for the network plugins: rustls with *ring*, the system's trust store
//! (read when the first HTTPS connection is made, not at start), and a cipher
//! list without ChaCha20 (see docs/DECISIONS.md, "Bundled plugins").

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring as suites};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::SigningKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SignatureScheme, StreamOwned};
use ureq::ReadWrite;

/// Where the certificates HTTPS servers are checked against come from.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the system's bundle and
    /// directory (`/etc/ssl/certs/ca-certificates.crt` and the like).
    #[default]
    System,
    /// Exactly these certificates (tests, or a caller with its own store).
    Certificates(Vec<CertificateDer<'static>>),
}

/// The TLS connector ureq hands every HTTPS connection to, redirects included.
pub struct Connector {
    trust: Trust,
    /// Built on the first HTTPS connection: a plain-HTTP job never reads the
    /// trust store.
    config: OnceLock<Result<Arc<ClientConfig>, String>>,
    /// Where a missing trust store is reported, so the caller answers it as a
    /// permanent failure (it is the host's setup, not the network).
    refused: Arc<Mutex<Option<String>>>,
}

impl Connector {
    /// A connector trusting `trust`, reporting setup failures into `refused`.
    pub fn new(trust: Trust, refused: Arc<Mutex<Option<String>>>) -> Connector {
        Connector {
            trust,
            config: OnceLock::new(),
            refused,
        }
    }

    fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.config
            .get_or_init(|| client_config(&self.trust))
            .clone()
    }
}

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ReadWrite>,
    ) -> Result<Box<dyn ReadWrite>, ureq::Error> {
        let config = match self.config() {
            Ok(c) => c,
            Err(msg) => {
                if let Ok(mut r) = self.refused.lock() {
                    *r = Some(msg.clone());
                }
                return Err(io::Error::new(io::ErrorKind::NotFound, msg).into());
            }
        };
        // ureq passes an IPv6 host with its URL brackets.
        let host = dns_name
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(dns_name);
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a TLS server name: {e}"),
            )
        })?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("TLS setup failed: {e}")))?;
        // The handshake, within the socket timeouts ureq has already set.
        conn.complete_io(&mut io)?;
        Ok(Box::new(TlsStream(StreamOwned::new(conn, io))))
    }
}

/// A TLS session over the connection ureq opened.
struct TlsStream(StreamOwned<ClientConnection, Box<dyn ReadWrite>>);

impl ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsStream").finish()
    }
}

/// TLS 1.2 and 1.3 with the trust anchors of `trust`.
fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let roots = roots(trust)?;
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The trust anchors; none at all is an error that says where to put them.
pub fn roots(trust: &Trust) -> Result<RootCertStore, String> {
    let (certs, problems) = match trust {
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            let problems: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            (found.certs, problems)
        }
        Trust::Certificates(c) => (c.clone(), Vec::new()),
    };
    let mut store = RootCertStore::empty();
    let (valid, invalid) = store.add_parsable_certificates(certs);
    if valid == 0 {
        let why = if !problems.is_empty() {
            problems.join("; ")
        } else if invalid > 0 {
            format!("{invalid} certificates found, none usable")
        } else {
            "none in SSL_CERT_FILE, SSL_CERT_DIR or the system's usual places".to_string()
        };
        return Err(format!(
            "no trusted root certificates for HTTPS ({why}): install the system's CA bundle \
             (the ca-certificates package) or set SSL_CERT_FILE to a PEM bundle and list it in \
             service.plugin_env_passthrough"
        ));
    }
    Ok(store)
}

/// rustls's *ring* provider without the ChaCha20-Poly1305 suites: every TLS
/// 1.3 server offers AES-GCM (RFC 8446 makes TLS_AES_128_GCM_SHA256 a must)
/// and so do TLS 1.2 servers in practice; leaving ChaCha20 out keeps its code
/// out of the binary. Built field by field because `default_provider()`
/// names every suite and would link them all.
fn provider() -> CryptoProvider {
    use suites::{cipher_suite as suite, kx_group};
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Random,
        key_provider: &NoClientKeys,
    }
}

/// Every signature *ring* verifies, mapped as rustls's own *ring* provider
/// maps them (it keeps that table private).
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        // For TLS 1.2 the curve is not fixed by the scheme; for TLS 1.3 it is.
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[
                webpki::ring::ECDSA_P384_SHA384,
                webpki::ring::ECDSA_P256_SHA384,
            ],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[
                webpki::ring::ECDSA_P256_SHA256,
                webpki::ring::ECDSA_P384_SHA256,
            ],
        ),
        (SignatureScheme::ED25519, &[webpki::ring::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// The operating system's random source, through *ring*.
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

/// The plugins never present a client certificate, so no signing key is
/// ever loaded (and no signing code is linked).
#[derive(Debug)]
struct NoClientKeys;

impl KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Server, certs};
    use crate::{Cidr, Policy};
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn policy(trust: Trust) -> Policy {
        Policy {
            allow: vec![Cidr::parse("127.0.0.1/32").unwrap()],
            trust,
            ..Policy::default()
        }
    }

    #[test]
    fn https_is_checked_against_the_trust_store() {
        let server = Server::start("hello over TLS");
        let p = policy(Trust::Certificates(certs("ca.pem")));
        let r = p
            .agent(Duration::from_secs(10), 0)
            .get(&server.url())
            .call()
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut body = String::new();
        r.into_reader().read_to_string(&mut body).unwrap();
        assert_eq!(body, "hello over TLS");
        assert_eq!(server.handshakes.load(Ordering::SeqCst), 1);

        // A server the store does not vouch for: a network failure (retried),
        // not a refusal, and no request was sent.
        let p = policy(Trust::Certificates(certs("other-ca.pem")));
        let e = p
            .agent(Duration::from_secs(10), 0)
            .get(&server.url())
            .call()
            .unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert_eq!(p.refusal(), None);
        assert_eq!(server.handshakes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn no_trust_store_is_a_refusal_that_says_where_to_put_one() {
        let server = Server::start("unreachable");
        let p = policy(Trust::Certificates(Vec::new()));
        let e = p
            .agent(Duration::from_secs(10), 0)
            .get(&server.url())
            .call()
            .unwrap_err();
        let refusal = p.refusal().unwrap();
        assert!(
            refusal.contains("no trusted root certificates"),
            "{refusal}"
        );
        assert!(refusal.contains("SSL_CERT_FILE"), "{refusal}");
        assert!(
            e.to_string().contains("no trusted root certificates"),
            "{e}"
        );
        assert_eq!(server.handshakes.load(Ordering::SeqCst), 0);
        // A bundle that holds no certificate is refused the same way.
        assert!(roots(&Trust::Certificates(Vec::new())).is_err());
        assert_eq!(
            roots(&Trust::Certificates(certs("ca.pem"))).unwrap().len(),
            1
        );
    }

    #[test]
    fn the_provider_offers_aes_gcm_only() {
        let p = provider();
        assert_eq!(p.cipher_suites.len(), 6);
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(name.contains("AES_") && name.contains("GCM"), "{name}");
        }
        assert_eq!(p.kx_groups.len(), 3);
    }
}
