//! `vesalius admin patient link|merge|split`: patient identity through the running server's
//! API (docs/patients.md), so that the rewritten instances go through its ingest (group commit,
//! prior versions, routing, audit). Needs an API token of a user who may reconcile
//! (`--token` or `VESALIUS_TOKEN`).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::transfers::{checked, client};

/// Where the server is and who asks.
#[derive(Args)]
pub struct ServerArgs {
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// An API token of a user who may reconcile (`vesalius admin token create`).
    #[arg(long, env = "VESALIUS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
}

/// The identity to give (link, split).
#[derive(Args)]
pub struct IdentityArgs {
    /// Local Patient ID.
    #[arg(long)]
    patient_id: String,
    /// Issuer of Patient ID ("" for none).
    #[arg(long, default_value = "")]
    issuer: String,
    /// Patient's Name (`Family^Given`); default: the local record's, else as received.
    #[arg(long)]
    name: Option<String>,
    /// Birth date `YYYYMMDD`; default: the local record's, else as received.
    #[arg(long)]
    birth_date: Option<String>,
    /// Sex (M, F, O); default: the local record's, else as received.
    #[arg(long)]
    sex: Option<String>,
}

impl IdentityArgs {
    fn json(&self) -> Value {
        let mut v = json!({ "patient_id": self.patient_id, "issuer": self.issuer });
        for (k, x) in [
            ("name", &self.name),
            ("birth_date", &self.birth_date),
            ("sex", &self.sex),
        ] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        v
    }
}

/// Patient identity commands.
#[derive(Subcommand)]
pub enum PatientCommand {
    /// Link a study's patient to a local identity (IHE Import Reconciliation): every instance
    /// is rewritten with the original values kept in Original Attributes Sequence, e.g.
    /// `patient link 1.2.3 --issuer NORTH --patient-id MRN123`.
    Link {
        /// Study Instance UID.
        study: String,
        #[command(flatten)]
        to: IdentityArgs,
    },
    /// Merge a patient into another: every study of `--from` gets `--into`'s identity and
    /// demographics, e.g. `patient merge --from SPOKE/12345 --into NORTH/MRN123`.
    Merge {
        /// The patient merged away, `ISSUER/ID` (`/ID` for no issuer).
        #[arg(long, value_name = "ISSUER/ID")]
        from: String,
        /// The patient kept, `ISSUER/ID`.
        #[arg(long, value_name = "ISSUER/ID")]
        into: String,
    },
    /// Move studies to another patient identity, e.g.
    /// `patient split 1.2.3 1.2.4 --issuer NORTH --patient-id MRN999`.
    Split {
        /// Study Instance UIDs.
        #[arg(required = true)]
        studies: Vec<String>,
        #[command(flatten)]
        to: IdentityArgs,
    },
}

/// `ISSUER/ID` (the first `/` separates) as a JSON patient reference.
fn patient_ref(s: &str) -> Result<Value> {
    match s.split_once('/') {
        Some((issuer, id)) if !id.trim().is_empty() => {
            Ok(json!({ "issuer": issuer.trim(), "patient_id": id.trim() }))
        }
        _ => bail!("{s:?} is not ISSUER/ID (`/ID` for a patient without issuer)"),
    }
}

fn who(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let name = s("name");
    let id = format!("{}/{}", s("issuer"), s("patient_id"));
    if name.is_empty() {
        id
    } else {
        format!("{id} ({name})")
    }
}

/// Runs a patient command.
pub async fn run(args: ServerArgs, cmd: PatientCommand) -> Result<()> {
    let base = args.server.trim_end_matches('/');
    let (path, body) = match &cmd {
        PatientCommand::Link { study, to } => {
            (format!("/api/v1/studies/{study}/link-patient"), to.json())
        }
        PatientCommand::Merge { from, into } => (
            "/api/v1/patients/merge".to_owned(),
            json!({ "from": patient_ref(from)?, "into": patient_ref(into)? }),
        ),
        PatientCommand::Split { studies, to } => (
            "/api/v1/patients/split".to_owned(),
            json!({ "study_uids": studies, "to": to.json() }),
        ),
    };
    let resp = client(args.token.as_deref())?
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .context("server unreachable")?;
    let v: Value = checked(resp).await?.json().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let studies: Vec<&Value> = match &cmd {
        PatientCommand::Link { .. } => vec![&v],
        _ => v["studies"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
    };
    for s in studies {
        println!(
            "study {}: {} -> {}: {} of {} instances rewritten",
            s["study_uid"].as_str().unwrap_or(""),
            who(&s["before"]),
            who(&s["after"]),
            s["changed"],
            s["instances"],
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn patient_references() {
        assert_eq!(
            super::patient_ref("NORTH/MRN/1").unwrap(),
            serde_json::json!({"issuer": "NORTH", "patient_id": "MRN/1"})
        );
        assert_eq!(
            super::patient_ref("/12345").unwrap()["issuer"],
            serde_json::json!("")
        );
        assert!(super::patient_ref("12345").is_err());
        assert!(super::patient_ref("NORTH/").is_err());
    }
}
