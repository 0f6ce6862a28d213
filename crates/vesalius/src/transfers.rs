//! `vesalius transfers`: the outgoing transfers of the running server (docs/api-exchange.md),
//! as a table or JSON, or followed live (`--watch`, the server-sent events of
//! `/api/v1/transfers/events`) until Ctrl-C. Needs an administrator's API token.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;

/// Arguments of `vesalius transfers`.
#[derive(Args)]
pub struct TransfersArgs {
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An administrator's API token (`vesalius admin token create`).
    #[arg(long, env = "VESALIUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the summaries as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Follow the transfers live, one progress line per event, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// At most this many transfers, most recently active first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// One study's transfer to one destination, as `GET /api/v1/transfers` answers it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Summary {
    queue: String,
    study_uid: String,
    priority: i32,
    pending: u64,
    parked: u64,
    delivered: u64,
    verified: u64,
    complete_ms: i64,
    last_error: String,
}

impl Summary {
    fn total(&self) -> u64 {
        self.delivered + self.pending + self.parked
    }

    /// `complete at T`, `parked N: error`, `pending N` or `delivered`.
    fn state(&self) -> String {
        if self.parked > 0 {
            let mut s = format!("parked {}", self.parked);
            if !self.last_error.is_empty() {
                s.push_str(": ");
                s.push_str(&self.last_error);
            }
            s
        } else if self.pending > 0 {
            format!("pending {}", self.pending)
        } else if self.complete_ms > 0 {
            format!("complete at {}", utc(self.complete_ms))
        } else {
            "delivered, awaiting receipt".into()
        }
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` of ms since the Unix epoch.
fn utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

pub(crate) fn client(token: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// Fails with the server's `{"error", "message"}` unless `resp` succeeded.
pub(crate) async fn checked(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    let hint = if status.as_u16() == 401 || status.as_u16() == 403 {
        " (a token of a user with that right: --token or VESALIUS_TOKEN)"
    } else {
        ""
    };
    bail!("{status}: {}{hint}", v["message"].as_str().unwrap_or(""))
}

async fn summaries(http: &reqwest::Client, base: &str, limit: usize) -> Result<Vec<Summary>> {
    let resp = http
        .get(format!("{base}/api/v1/transfers?limit={}", limit.max(1)))
        .send()
        .await
        .context("server unreachable")?;
    Ok(checked(resp).await?.json().await?)
}

fn table(rows: &[Summary]) {
    let head = [
        "DESTINATION",
        "STUDY",
        "PRIORITY",
        "DELIVERED",
        "VERIFIED",
        "STATE",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|s| {
            [
                s.queue.clone(),
                s.study_uid.clone(),
                s.priority.to_string(),
                format!("{}/{}", s.delivered, s.total()),
                s.verified.to_string(),
                s.state(),
            ]
        })
        .collect();
    // The last column (state, with the error) is not padded.
    let mut width = [0usize; 5];
    for (i, w) in width.iter_mut().enumerate() {
        *w = cells
            .iter()
            .map(|c| c[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0);
    }
    let line = |c: [&str; 6]| {
        let mut s = String::new();
        for i in 0..5 {
            s.push_str(&format!("{:<w$}  ", c[i], w = width[i]));
        }
        s.push_str(c[5]);
        println!("{}", s.trim_end());
    };
    line(head);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
    }
    if rows.is_empty() {
        println!("(no transfers)");
    }
}

/// Runs `vesalius transfers`.
pub async fn run(a: TransfersArgs) -> Result<()> {
    let base = a.server.trim_end_matches('/').to_owned();
    let http = client(a.token.as_deref())?;
    if a.watch {
        return watch(&http, &base, a.limit, a.json).await;
    }
    if a.json {
        // As the server answered, for scripts.
        let resp = http
            .get(format!("{base}/api/v1/transfers?limit={}", a.limit.max(1)))
            .send()
            .await
            .context("server unreachable")?;
        let v: serde_json::Value = checked(resp).await?.json().await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        table(&summaries(&http, &base, a.limit).await?);
    }
    Ok(())
}

/// One progress line: the event and where its transfer stands now.
fn progress(event: &str, data: &serde_json::Value, now: Option<&Summary>) -> String {
    let study = data["study_uid"].as_str().unwrap_or("");
    let dest = data["queue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| data["from_peer"].as_str().map(|p| format!("from {p}")))
        .unwrap_or_default();
    let what = match event {
        "delivered" => format!("+{}", data["instances"].as_u64().unwrap_or(0)),
        "transfer-complete" => format!("confirmed {}", data["instances"].as_u64().unwrap_or(0)),
        "study-complete" => format!(
            "arrived complete, {} instances, priority {}",
            data["instances"].as_u64().unwrap_or(0),
            data["priority"].as_i64().unwrap_or(0)
        ),
        "parked" => format!("parked: {}", data["error"].as_str().unwrap_or("")),
        "lagged" => "events missed (too slow to keep up): the lists above may be stale".to_owned(),
        other => other.to_owned(),
    };
    let mut line = format!(
        "{} {event:<17} {dest} {study} {what}",
        utc(vesalius_exchange::now_ms())
    );
    if let Some(s) = now {
        line.push_str(&format!(
            " [{}/{} delivered, {} verified, {}]",
            s.delivered,
            s.total(),
            s.verified,
            s.state()
        ));
    }
    line
}

/// Follows `/api/v1/transfers/events` until Ctrl-C or the server ends the stream.
async fn watch(http: &reqwest::Client, base: &str, limit: usize, json: bool) -> Result<()> {
    if !json {
        table(&summaries(http, base, limit).await?);
        println!("following {base}/api/v1/transfers/events (Ctrl-C to stop)");
    }
    let resp = http
        .get(format!("{base}/api/v1/transfers/events"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .context("server unreachable")?;
    let mut body = checked(resp).await?.bytes_stream();
    let mut buf = String::new();
    let follow = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the event stream broke off")?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            // Events end with a blank line (the server sends `\n` line ends).
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for l in block.lines() {
                    if let Some(v) = l.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = l.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                if json {
                    println!("{data}");
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                // Where the transfer stands after this event (sender side only).
                let now = match v["queue"].as_str() {
                    Some(q) => {
                        let all = summaries(http, base, limit.max(200))
                            .await
                            .unwrap_or_default();
                        let study = v["study_uid"].as_str().unwrap_or("");
                        let by_key: HashMap<(&str, &str), &Summary> = all
                            .iter()
                            .map(|s| ((s.queue.as_str(), s.study_uid.as_str()), s))
                            .collect();
                        by_key.get(&(q, study)).map(|s| (*s).clone())
                    }
                    None => None,
                };
                println!("{}", progress(&event, &v, now.as_ref()));
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = follow => {
            r?;
            bail!("the server ended the event stream");
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_column() {
        let mut s = Summary {
            delivered: 3,
            pending: 1,
            ..Default::default()
        };
        assert_eq!((s.total(), s.state().as_str()), (4, "pending 1"));
        s.pending = 0;
        s.parked = 2;
        s.last_error = "refused".into();
        assert_eq!(s.state(), "parked 2: refused");
        s.parked = 0;
        s.complete_ms = 86_400_000;
        assert_eq!(s.state(), "complete at 1970-01-02 00:00:00Z");
    }
}
