//! The relay request as it travels: its headers and the HMAC-SHA256 that
//! binds method, path, timestamp and raw body together, so a signature cannot
//! be moved to another path or replayed with another body or time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The sending instance's name.
pub const PEER: &str = "X-Ductile-Peer";
/// Which shared key signed the request.
pub const KEY_ID: &str = "X-Ductile-Key-Id";
/// Unix seconds at signing.
pub const TIMESTAMP: &str = "X-Ductile-Timestamp";
/// `sha256=<hex>` of the signed message.
pub const SIGNATURE: &str = "X-Ductile-Signature";

/// The signed message: `METHOD\npath\ntimestamp\n` followed by the raw body.
pub fn message(method: &str, path: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(method.len() + path.len() + timestamp.len() + 3 + body.len());
    for part in [method.as_bytes(), path.as_bytes(), timestamp.as_bytes()] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(body);
    m
}

/// The `X-Ductile-Signature` value for a request.
pub fn sign(secret: &[u8], method: &str, path: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(&message(method, path, timestamp, body));
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_every_part() {
        let base = sign(b"k", "POST", "/in/a", "100", b"{}");
        assert!(base.starts_with("sha256=") && base.len() == 71);
        for other in [
            sign(b"k2", "POST", "/in/a", "100", b"{}"),
            sign(b"k", "PUT", "/in/a", "100", b"{}"),
            sign(b"k", "POST", "/in/b", "100", b"{}"),
            sign(b"k", "POST", "/in/a", "101", b"{}"),
            sign(b"k", "POST", "/in/a", "100", b"{ }"),
        ] {
            assert_ne!(base, other);
        }
    }
}
