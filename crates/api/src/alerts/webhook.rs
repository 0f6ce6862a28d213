//! Webhook deliveries: a JSON `POST` signed with the subscription's secret.
//!
//! Headers:
//! - `X-Vesalius-Timestamp: 1765100000` (Unix seconds when sent);
//! - `X-Vesalius-Signature: v1=<hex>`: HMAC-SHA256 with the secret as the key over
//!   `"{timestamp}.{body}"` (the body's exact bytes), so a receiver checks both the body and
//!   its age (and refuses old timestamps against replays);
//! - `X-Vesalius-Delivery: <id>`: the same for every retry of one delivery (deduplicate on it).
//!
//! A 2xx answer is delivered; 408, 429, 5xx and network errors are retried; other answers are
//! permanent failures.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::SendError;

/// The signature header's value for `body` sent at `timestamp` (Unix seconds) with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header as a receiver would (constant time), and that `timestamp` is
/// within `tolerance_s` of `now_s`.
pub fn verify(
    secret: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    let Some(hex_sig) = header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    (now_s - timestamp).abs() <= tolerance_s && mac.verify_slice(&sig).is_ok()
}

/// Posts `body` to `url`, signed.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &serde_json::Value,
    timestamp: i64,
) -> Result<(), SendError> {
    let bytes = serde_json::to_vec(body).map_err(|e| SendError::permanent(e.to_string()))?;
    let delivery = body["delivery"].as_str().unwrap_or_default();
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("vesalius/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-vesalius-timestamp", timestamp.to_string())
        .header("x-vesalius-signature", signature(secret, timestamp, &bytes))
        .header("x-vesalius-delivery", delivery)
        .body(bytes)
        .send()
        .await
        .map_err(|e| match super::target::refused_in(&e) {
            // The name resolved inside the site's network: retrying cannot help.
            Some(r) => SendError::permanent(format!("POST {url}: {r}")),
            None => SendError::retry(format!("POST {url}: {}", chain(&e))),
        })?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let msg = format!("POST {url}: HTTP {status}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(SendError::retry(msg))
    } else {
        Err(SendError::permanent(msg))
    }
}

/// `e` and its sources, `: `-separated (reqwest's own message names only the URL).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(x) = cur {
        let m = x.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = x.source();
    }
    out
}
