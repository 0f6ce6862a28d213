//! `vesalius audit …`: verify, search, export and checkpoint the hash-chained audit trail of a
//! data directory (server stopped or running).
//!
//! - `verify` re-hashes every record and checks every signed checkpoint
//!   (`vesalius_auth::audit_chain::verify`); it exits non-zero when the chain is broken and
//!   names each place (`seq`) and kind (edited, deleted, inserted, reordered, checkpoint
//!   problems). It trusts the public keys given with `--key`, or else the site key's.
//! - `checkpoint` signs the chain's head with the site key, `<data dir>/`[`SITE_KEY_FILE`]
//!   (created, mode 0600, when missing).
//! - `search` and `export` read the trail; each is itself audited (`audit-read`). `export`
//!   writes FHIR `AuditEvent`s or the RFC 5424 messages `[audit.syslog]` sends (`crate::syslog`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::json;
use vesalius_auth::audit_chain::{self, ProblemKind, SiteKey, VerifyReport};
use vesalius_store::AuditLog;
use vesalius_store::audit::{AuditFilter, AuditRecord};

use crate::admin::context::{AdminContext, data_dir, print_json, show_time};
use crate::config::Config;

/// The site key's file name in the data directory.
pub const SITE_KEY_FILE: &str = "site.key";

/// `vesalius audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Data directory (default from the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    what: AuditCommand,
}

/// Audit trail commands.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; exit status 1 when broken.
    Verify {
        /// Trusted public key (hex) of checkpoint signatures; repeatable. Default: the site
        /// key's. Keep a copy of it where the database's administrators cannot write.
        #[arg(long = "key", value_name = "HEX")]
        keys: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find audit records, newest first.
    Search {
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
        /// Patient as `ISSUER/ID` (the first `/` separates; `/ID` for no issuer).
        #[arg(long, value_name = "ISSUER/ID")]
        patient: Option<String>,
        /// Actor id (user id, token id, AE title, link id, `cli`).
        #[arg(long)]
        actor: Option<String>,
        /// Action (`login`, `retrieve`, `store`, `token-create`, `admin-change`, …).
        #[arg(long)]
        action: Option<String>,
        /// Organisation owning the data.
        #[arg(long)]
        org: Option<String>,
        /// From this time: `YYYY-MM-DD[THH:MM[:SS]]` (UTC), ms since the epoch, or an age
        /// (`30m`, `24h`, `7d`).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// Before this time (same forms as --since).
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the trail, oldest first.
    Export {
        /// Output format: `fhir`, one FHIR R4 AuditEvent per line (NDJSON); `dicom-syslog`, one
        /// RFC 5424 message carrying a DICOM audit message per line, as `[audit.syslog]`
        /// sends them (without the octet count).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file (`-`: standard output).
        #[arg(long)]
        out: PathBuf,
        /// From this time (same forms as `search --since`).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// Before this time.
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// The site name written into each event's `source.site` (FHIR) or `AuditSourceID`
        /// (DICOM; default `[audit.syslog] source_id`), by default our AE title.
        #[arg(long)]
        site: Option<String>,
    },
    /// Sign the head of the chain with the site key (`<data dir>/site.key`, created when
    /// missing).
    Checkpoint {
        /// Print the checkpoint as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Export formats.
#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// FHIR R4 AuditEvent resources, one per line.
    Fhir,
    /// RFC 5424 syslog messages with DICOM audit messages (PS3.15 A.5), one per line.
    DicomSyslog,
}

/// Runs an audit command.
pub async fn run(args: AuditArgs, cfg: Config) -> Result<()> {
    let dir = data_dir(&cfg, args.data_dir);
    let cx = AdminContext::open_existing(&dir).await?;
    match args.what {
        AuditCommand::Verify { keys, json } => verify(&cx, &dir, keys, json).await,
        AuditCommand::Search {
            study,
            patient,
            actor,
            action,
            org,
            since,
            until,
            limit,
            json,
        } => {
            let patient = patient
                .map(|p| match p.split_once('/') {
                    Some((issuer, id)) if !id.is_empty() => Ok((issuer.to_owned(), id.to_owned())),
                    _ => bail!("--patient {p:?} is not ISSUER/ID"),
                })
                .transpose()?;
            let filter = AuditFilter {
                org,
                actor_org: None,
                actor_id: actor,
                action,
                study_uid: study,
                patient,
                since_ms: since,
                until_ms: until,
                before_seq: None,
                limit: limit.max(1),
            };
            let records = cx.index.search(&filter).await?;
            audit_read(&cx, json!({ "search": filter, "records": records.len() })).await?;
            if json {
                return print_json(&records);
            }
            if records.is_empty() {
                println!("no records");
            }
            for r in &records {
                println!("{}", line(r));
            }
            Ok(())
        }
        AuditCommand::Export {
            format,
            out,
            since,
            until,
            site,
        } => {
            let (name, what, line): (_, _, LineFn) = match format {
                ExportFormat::Fhir => {
                    let site = site.unwrap_or_else(|| cfg.dicom.ae_title.clone());
                    (
                        "fhir",
                        "FHIR AuditEvent resources",
                        Box::new(move |r| {
                            Ok(serde_json::to_vec(&vesalius_auth::fhir::audit_event(
                                r, &site,
                            ))?)
                        }),
                    )
                }
                ExportFormat::DicomSyslog => {
                    let (header, mut source) = crate::syslog::message_format(&cfg)?;
                    if let Some(site) = site {
                        source.id = site;
                    }
                    (
                        "dicom-syslog",
                        "syslog messages with DICOM audit messages",
                        Box::new(move |r| {
                            Ok(vesalius_auth::dicom_audit::syslog_message(
                                r, &source, &header,
                            ))
                        }),
                    )
                }
            };
            let n = export(cx.index.as_ref(), &out, since, until, line).await?;
            audit_read(
                &cx,
                json!({ "export": name, "records": n, "since_ms": since, "until_ms": until }),
            )
            .await?;
            if out.as_os_str() != "-" {
                eprintln!("wrote {n} {what} to {}", out.display());
            }
            Ok(())
        }
        AuditCommand::Checkpoint { json } => {
            let key = SiteKey::load_or_create(&dir.join(SITE_KEY_FILE))?;
            let cp = audit_chain::checkpoint(cx.index.as_ref(), &key, cx.auth.now_ms()).await?;
            match (cp, json) {
                (Some(cp), true) => print_json(&cp),
                (None, true) => print_json(&serde_json::Value::Null),
                (Some(cp), false) => {
                    println!("signed seq {} (hash {})", cp.seq, cp.hash);
                    println!("site public key {}", cp.key_id);
                    Ok(())
                }
                (None, false) => {
                    println!("nothing to sign: the trail is empty or its head is signed already");
                    println!("site public key {}", key.public_hex());
                    Ok(())
                }
            }
        }
    }
}

/// The JSON form of a verification report.
#[derive(Serialize)]
struct ReportView {
    ok: bool,
    records_checked: u64,
    checkpoints_checked: u64,
    head_seq: u64,
    last_signed_seq: u64,
    unsigned_tail: u64,
    trusted_keys: Vec<String>,
    problems: Vec<ProblemView>,
    more_problems: u64,
}

#[derive(Serialize)]
struct ProblemView {
    seq: u64,
    kind: &'static str,
    detail: String,
}

/// The kebab-case name of a problem kind, as printed and in JSON.
fn kind_name(k: ProblemKind) -> &'static str {
    match k {
        ProblemKind::Edited => "edited",
        ProblemKind::Deleted => "deleted",
        ProblemKind::Inserted => "inserted",
        ProblemKind::Reordered => "reordered",
        ProblemKind::BadCheckpointSignature => "bad-checkpoint-signature",
        ProblemKind::CheckpointMismatch => "checkpoint-mismatch",
        ProblemKind::Truncated => "truncated",
    }
}

async fn verify(cx: &AdminContext, dir: &Path, keys: Vec<String>, json: bool) -> Result<()> {
    let keys = if keys.is_empty() {
        let path = dir.join(SITE_KEY_FILE);
        if path.exists() {
            vec![SiteKey::load_or_create(&path)?.public_hex()]
        } else {
            Vec::new()
        }
    } else {
        keys.iter().map(|k| k.trim().to_lowercase()).collect()
    };
    let report = audit_chain::verify(cx.index.as_ref(), &keys).await?;
    let view = report_view(&report, keys);
    if json {
        print_json(&view)?;
    } else {
        println!(
            "audit trail: {} records, {} checkpoints, head seq {}, signed up to seq {} ({} \
             unsigned)",
            view.records_checked,
            view.checkpoints_checked,
            view.head_seq,
            view.last_signed_seq,
            view.unsigned_tail
        );
        for p in &view.problems {
            println!("seq {}: {}: {}", p.seq, p.kind, p.detail);
        }
        if view.more_problems > 0 {
            println!("… and {} more problems", view.more_problems);
        }
        if view.ok {
            println!("OK: the chain is intact");
        }
    }
    if let Some(first) = view.problems.first() {
        bail!(
            "the audit trail has {} problem(s), the first at seq {} ({})",
            view.problems.len() as u64 + view.more_problems,
            first.seq,
            first.kind
        );
    }
    Ok(())
}

fn report_view(r: &VerifyReport, trusted_keys: Vec<String>) -> ReportView {
    ReportView {
        ok: r.is_ok(),
        records_checked: r.records_checked,
        checkpoints_checked: r.checkpoints_checked,
        head_seq: r.head_seq,
        last_signed_seq: r.last_signed_seq,
        unsigned_tail: r.unsigned_tail(),
        trusted_keys,
        problems: r
            .problems
            .iter()
            .map(|p| ProblemView {
                seq: p.seq,
                kind: kind_name(p.kind),
                detail: p.detail.clone(),
            })
            .collect(),
        more_problems: r.more_problems,
    }
}

/// Turns a record into one line of an export (without the line break).
type LineFn = Box<dyn Fn(&AuditRecord) -> Result<Vec<u8>>>;

/// Writes every record in `since..until` as one line made by `line`; the number written.
async fn export(
    log: &dyn AuditLog,
    out: &Path,
    since: Option<i64>,
    until: Option<i64>,
    line: LineFn,
) -> Result<u64> {
    let mut w: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        ))
    };
    let head = log.head().await?.map_or(0, |r| r.seq);
    let mut n = 0u64;
    let mut from = 1u64;
    while from <= head {
        let page = log.records(from, audit_chain::PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for r in &page {
            let t = r.event.time_ms;
            if since.is_some_and(|s| t < s) || until.is_some_and(|u| t >= u) {
                continue;
            }
            w.write_all(&line(r)?)?;
            w.write_all(b"\n")?;
            n += 1;
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(n)
}

/// Records that the command line read the trail.
async fn audit_read(cx: &AdminContext, details: serde_json::Value) -> Result<()> {
    let ev = cx.event("audit-read", "", details);
    cx.index.append(vec![ev]).await?;
    Ok(())
}

/// One record as a line of text.
fn line(r: &AuditRecord) -> String {
    let e = &r.event;
    let mut s = format!(
        "{:>6} {} {:<20} {:<8} {}:{}",
        r.seq,
        show_time(e.time_ms),
        e.action,
        serde_json::to_value(e.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        serde_json::to_value(e.actor.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        if e.actor.name.is_empty() {
            &e.actor.id
        } else {
            &e.actor.name
        }
    );
    if !e.org.is_empty() {
        s.push_str(&format!(" org={}", e.org));
    }
    if let Some((issuer, id)) = &e.patient {
        s.push_str(&format!(" patient={issuer}/{id}"));
    }
    if let Some(study) = &e.study_uid {
        s.push_str(&format!(" study={study}"));
    }
    if !e.source.is_empty() {
        s.push_str(&format!(" from={}", e.source));
    }
    if e.details.as_object().is_some_and(|o| !o.is_empty()) {
        s.push_str(&format!(" {}", e.details));
    }
    s
}

/// Parses `--since`/`--until`: ms since the epoch, an age (`30m`, `24h`, `7d`) before now, or a
/// UTC date `YYYY-MM-DD[THH:MM[:SS]][Z]`.
fn parse_time(s: &str) -> Result<i64, String> {
    parse_time_at(s, vesalius_auth::now_ms())
}

fn parse_time_at(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    let bad =
        || format!("{s:?}: expected YYYY-MM-DD[THH:MM[:SS]], ms since the epoch, or 30m/24h/7d");
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    for (suffix, unit) in [("m", 60_000i64), ("h", 3_600_000), ("d", 86_400_000)] {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<i64>().ok()) {
            return Ok(now - n.max(0).saturating_mul(unit));
        }
    }
    let s2 = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s2.split_once(['T', ' ']).unwrap_or((s2, "00:00:00"));
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || d[0].len() != 4 || !(2..=3).contains(&t.len()) {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, mi) = (num(t[0])?, num(t[1])?);
    let se = t.get(2).map_or(Ok(0), |x| num(x))?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 59 {
        return Err(bad());
    }
    let ms = (days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se) * 1000;
    // Reject 31 February and the like: the date must read back the same.
    if !vesalius_auth::fhir::instant(ms).starts_with(date) {
        return Err(bad());
    }
    Ok(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_at("1970-01-01", 0), Ok(0));
        assert_eq!(parse_time_at("2026-03-01T12:30", 0), Ok(1_772_368_200_000));
        assert_eq!(
            parse_time_at("2026-03-01T12:30:05Z", 0),
            Ok(1_772_368_205_000)
        );
        assert_eq!(parse_time_at("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time_at("24h", 100_000_000),
            Ok(100_000_000 - 86_400_000)
        );
        assert_eq!(parse_time_at("30m", 3_600_000), Ok(1_800_000));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "yesterday",
            "2026-01-01T25:00",
            "26-01-01",
        ] {
            assert!(parse_time_at(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_kind_has_a_name() {
        use ProblemKind::*;
        let names: std::collections::HashSet<_> = [
            Edited,
            Deleted,
            Inserted,
            Reordered,
            BadCheckpointSignature,
            CheckpointMismatch,
            Truncated,
        ]
        .into_iter()
        .map(kind_name)
        .collect();
        assert_eq!(names.len(), 7);
    }
}
