//! `vesalius deid --key KEY --out DIR PATH…`: de-identified copies of DICOM files with the
//! PS3.15 Annex E Basic Profile and the options chosen by flags (see `vesalius-deid` and
//! docs/deidentification.md). Files and folders (recursively) are read; each copy is written
//! to `DIR/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm` under its new UIDs.
//! Prints a summary (counts per action, warnings, instances to check for burned-in text), or
//! JSON with `--json`. `--table-json` prints the encoded Table E.1-1 and exits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use vesalius_deid::{
    Applied, DeidOptions, DeidReport, ProfileOption, WarningKind, deidentify_file, table,
};

/// Arguments of `vesalius deid`.
#[derive(Args)]
pub struct DeidArgs {
    /// Project key: the same key gives the same pseudonymous UIDs, patient IDs and date shifts.
    /// Keep it secret; prefer the environment variable to the command line.
    #[arg(
        long,
        env = "VESALIUS_DEID_KEY",
        hide_env_values = true,
        required_unless_present = "table_json"
    )]
    key: Option<String>,
    /// Retain Longitudinal Temporal Information with Full Dates.
    #[arg(long, conflicts_with = "shift_dates")]
    retain_dates: bool,
    /// Retain Longitudinal Temporal Information with Modified Dates: shift each patient's dates
    /// back by a keyed 1..=MAX_DAYS days.
    #[arg(long, value_name = "MAX_DAYS")]
    shift_dates: Option<u32>,
    /// Retain Patient Characteristics (age, sex, size, weight…).
    #[arg(long)]
    retain_patient_characteristics: bool,
    /// Retain Device Identity (serial numbers, station names…).
    #[arg(long)]
    retain_device_identity: bool,
    /// Retain Institution Identity.
    #[arg(long)]
    retain_institution_identity: bool,
    /// Retain UIDs.
    #[arg(long)]
    retain_uids: bool,
    /// Clean Descriptors: keep descriptions after removing identifying values from them.
    #[arg(long)]
    clean_descriptors: bool,
    /// Clean Structured Content: keep SR content, cleaned.
    #[arg(long)]
    clean_structured_content: bool,
    /// Retain Safe Private: keep the private attributes of the safe list.
    #[arg(long)]
    retain_safe_private: bool,
    /// Read X/Z, X/D, X/Z/D and X/Z/U* as X (and Z/D as Z) instead of the IOD-conformant choice.
    #[arg(long)]
    prefer_removal: bool,
    /// Prefix of patient pseudonyms.
    #[arg(long, default_value = "ANON")]
    pseudonym_prefix: String,
    /// Output folder.
    #[arg(long, short, required_unless_present = "table_json")]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Print the encoded PS3.15 Table E.1-1 as JSON and exit.
    #[arg(long)]
    table_json: bool,
    /// Files or folders (recursive).
    #[arg(required_unless_present = "table_json")]
    paths: Vec<PathBuf>,
}

impl DeidArgs {
    fn options(&self, key: &str) -> DeidOptions {
        let mut o = DeidOptions::new(key)
            .retain_full_dates(self.retain_dates)
            .retain_patient_characteristics(self.retain_patient_characteristics)
            .retain_device_identity(self.retain_device_identity)
            .retain_institution_identity(self.retain_institution_identity)
            .retain_uids(self.retain_uids)
            .clean_descriptors(self.clean_descriptors)
            .clean_structured_content(self.clean_structured_content)
            .retain_safe_private(self.retain_safe_private)
            .prefer_removal(self.prefer_removal)
            .pseudonym_prefix(self.pseudonym_prefix.clone());
        if let Some(days) = self.shift_dates {
            o = o.retain_modified_dates(days);
        }
        o
    }
}

/// One written file.
#[derive(Debug, Serialize)]
struct Written {
    input: String,
    output: String,
    report: DeidReport,
}

/// One file that could not be de-identified.
#[derive(Debug, Serialize)]
struct Failed {
    input: String,
    error: String,
}

/// The outcome of a run.
#[derive(Debug, Default, Serialize)]
struct Summary {
    options: Vec<ProfileOption>,
    written: usize,
    counts: BTreeMap<Applied, usize>,
    warnings: BTreeMap<WarningKind, usize>,
    files: Vec<Written>,
    failed: Vec<Failed>,
    /// Files in the given folders that are not DICOM Part 10 (no `DICM` at byte 128).
    skipped: Vec<String>,
}

fn is_part10(path: &Path) -> bool {
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}

/// The files to read: explicit files as given, folders walked in name order; nothing under
/// `out` (a rerun must not de-identify earlier output).
fn collect(
    paths: &[PathBuf],
    out: &Path,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<String>,
) -> Result<()> {
    let out = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    fn walk(
        dir: &Path,
        out: &Path,
        files: &mut Vec<PathBuf>,
        skipped: &mut Vec<String>,
    ) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.canonicalize().is_ok_and(|c| c.starts_with(out)) {
                continue;
            }
            if p.is_dir() {
                walk(&p, out, files, skipped)?;
            } else if is_part10(&p) {
                files.push(p);
            } else {
                skipped.push(p.display().to_string());
            }
        }
        Ok(())
    }
    for p in paths {
        if p.is_dir() {
            walk(p, &out, files, skipped)?;
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    Ok(())
}

/// Runs `vesalius deid`.
pub fn run(a: DeidArgs) -> Result<()> {
    if a.table_json {
        let json = serde_json::to_string_pretty(table::ROWS)?;
        // Piped into `head` or a pager that quits early: not an error.
        return match writeln!(std::io::stdout().lock(), "{json}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        };
    }
    let key = a
        .key
        .clone()
        .context("--key or VESALIUS_DEID_KEY is required")?;
    let out = a.out.clone().context("--out is required")?;
    if key.len() < 16 {
        eprintln!("warning: the key is shorter than 16 bytes; a long random key resists guessing");
    }
    let opts = a.options(&key);
    let mut s = Summary {
        options: opts.enabled().to_vec(),
        ..Summary::default()
    };
    let mut files = Vec::new();
    collect(&a.paths, &out, &mut files, &mut s.skipped)?;
    if files.is_empty() {
        bail!("no DICOM files found");
    }
    for input in files {
        match deidentify_file(&input, &out, &opts) {
            Ok(done) => {
                for (k, n) in &done.report.counts {
                    *s.counts.entry(*k).or_default() += n;
                }
                for w in &done.report.warnings {
                    *s.warnings.entry(w.kind).or_default() += 1;
                }
                s.written += 1;
                s.files.push(Written {
                    input: input.display().to_string(),
                    output: done.output.display().to_string(),
                    report: done.report,
                });
            }
            Err(e) => s.failed.push(Failed {
                input: input.display().to_string(),
                error: format!("{:#}", anyhow::Error::new(e)),
            }),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s, &out);
    }
    if !s.failed.is_empty() {
        bail!(
            "{} of {} files failed",
            s.failed.len(),
            s.failed.len() + s.written
        );
    }
    Ok(())
}

fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_summary(s: &Summary, out: &Path) {
    let options: Vec<&str> = s.options.iter().map(|o| o.as_str()).collect();
    println!(
        "de-identified {} files into {} (basic profile{}{})",
        s.written,
        out.display(),
        if options.is_empty() { "" } else { ", " },
        options.join(", ")
    );
    for (k, n) in &s.counts {
        println!("{:>16}: {n}", kebab(k));
    }
    for (k, n) in &s.warnings {
        println!("warning: {} in {n} files", kebab(k));
    }
    for f in &s.files {
        for w in &f.report.warnings {
            if matches!(
                w.kind,
                WarningKind::BurnedInAnnotation
                    | WarningKind::PossibleBurnedInAnnotation
                    | WarningKind::RecognizableVisualFeatures
            ) {
                println!("check {}: {}", f.output, w.message);
            }
        }
    }
    if !s.skipped.is_empty() {
        println!("skipped {} files that are not DICOM", s.skipped.len());
    }
    for f in &s.failed {
        println!("failed {}: {}", f.input, f.error);
    }
}
