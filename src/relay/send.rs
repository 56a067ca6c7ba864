//! One delivery attempt: the outbox row's body, signed with a fresh
//! timestamp, posted to the instance's ingress. The answer is sorted into
//! what the retry policy needs: accepted (or already accepted), refused for
//! good (a 4xx: the request itself is wrong), or unavailable (network, 5xx,
//! 408, 429: the same request may succeed later).

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::wire;
use crate::config::relay::Instance;

/// The most of a receiver's answer that is read.
const MAX_ANSWER: u64 = 64 * 1024;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The receiver accepted the event (202) and names its local root job.
    Accepted {
        /// The receiver's root job id.
        job_id: Option<String>,
    },
    /// The receiver already had it (200: a redelivery or a replay).
    Duplicate,
    /// A 4xx (or an unexpected answer): sending it again cannot help.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The receiver's stable refusal code (`bad_signature`), when it gave one.
        code: Option<String>,
        /// What the sender's operator should know.
        message: String,
    },
    /// The receiver could not be reached or answered 5xx/408/429.
    Unavailable(String),
}

/// The client every delivery shares: kept-alive connections to each
/// receiver, no redirects (a redirect would move a signed request elsewhere).
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .redirects(0)
            .max_idle_connections_per_host(16)
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("ductile/", env!("CARGO_PKG_VERSION")))
            .build()
    })
}

/// Posts `body` to `instance` as `sender`, signed at `unix_now`.
pub fn deliver(instance: &Instance, sender: &str, body: &[u8], unix_now: i64) -> Delivery {
    let timestamp = unix_now.to_string();
    let signature = wire::sign(
        instance.secret.expose().as_bytes(),
        "POST",
        &instance.signed_path(),
        &timestamp,
        body,
    );
    let mut request = agent()
        .post(&instance.url())
        .timeout(instance.timeout)
        .set("Content-Type", "application/json")
        .set(wire::PEER, sender)
        .set(wire::TIMESTAMP, &timestamp)
        .set(wire::SIGNATURE, &signature);
    if let Some(id) = &instance.key_id {
        request = request.set(wire::KEY_ID, id);
    }
    match request.send_bytes(body) {
        Ok(answer) => {
            let status = answer.status();
            let json = read_json(answer);
            match status {
                202 => Delivery::Accepted {
                    job_id: json
                        .get("job_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                },
                200 => Delivery::Duplicate,
                other => Delivery::Refused {
                    status: other,
                    code: None,
                    message: format!(
                        "the receiver answered {other}, which is not a relay answer (relay does not follow redirects; check `base_url` and `ingress_path`)"
                    ),
                },
            }
        }
        Err(ureq::Error::Status(status, answer)) => {
            let json = read_json(answer);
            let code = json.get("code").and_then(Value::as_str).map(str::to_string);
            let said = json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error text");
            let about = match &code {
                Some(c) => format!("{said} ({c})"),
                None => said.to_string(),
            };
            if status >= 500 || status == 408 || status == 429 {
                Delivery::Unavailable(format!("the receiver answered {status}: {about}"))
            } else {
                Delivery::Refused {
                    status,
                    message: format!("the receiver refused it with {status}: {about}"),
                    code,
                }
            }
        }
        Err(ureq::Error::Transport(t)) => {
            Delivery::Unavailable(format!("cannot reach {}: {t}", instance.url()))
        }
    }
}

/// The answer's JSON body, or `null` when it has none.
fn read_json(answer: ureq::Response) -> Value {
    let mut text = Vec::new();
    if answer
        .into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut text)
        .is_err()
    {
        return Value::Null;
    }
    serde_json::from_slice(&text).unwrap_or(Value::Null)
}

/// `GET url` with the relay client: the status, or why there was none.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    match agent().get(url).timeout(timeout).call() {
        Ok(answer) => Ok(answer.status()),
        Err(ureq::Error::Status(status, _)) => Ok(status),
        Err(ureq::Error::Transport(t)) => Err(t.to_string()),
    }
}
