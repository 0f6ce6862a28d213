//! Forwarding to legacy DICOM nodes: C-STORE SCU (PS3.4 B) over one association per leased
//! batch, with presentation contexts built from what the node accepts. An object stored in a
//! syntax the node does not accept is transcoded (to Explicit VR Little Endian, or the first
//! accepted syntax we can produce) before sending; the stored bytes are never changed.

use std::collections::BTreeSet;

use bytes::Bytes;
use vesalius_core::uid;
use vesalius_dimse::scu::StoreSession;
use vesalius_store::outbox::Job;
use vesalius_store::registry::DicomNode;

use crate::job::TransferJob;
use crate::manifest::ManifestEntry;
use crate::worker::Exchange;

/// What a node accepts when its record lists nothing: the uncompressed syntaxes (PS3.5 A.1, A.2).
fn accepted(node: &DicomNode) -> Vec<String> {
    if node.transfer_syntaxes.is_empty() {
        vec![
            uid::EXPLICIT_VR_LE.to_owned(),
            uid::IMPLICIT_VR_LE.to_owned(),
        ]
    } else {
        node.transfer_syntaxes.clone()
    }
}

/// The syntax to send `stored` in: itself when accepted, else the first accepted syntax we can
/// transcode to.
fn target_syntax(stored: &str, accepted: &[String]) -> Option<String> {
    let stored = stored.trim_end_matches(['\0', ' ']);
    if accepted.iter().any(|a| a == stored) {
        return Some(stored.to_owned());
    }
    accepted
        .iter()
        .find(|a| vesalius_codec::can_transcode(stored, a))
        .cloned()
}

/// Offset of the data set in a whole Part 10 file (after the preamble, `DICM` and the meta
/// group, [`vesalius_dimse::meta_length`]); `None` when it is not one.
pub(crate) fn data_set_offset(file: &[u8]) -> Option<usize> {
    vesalius_dimse::meta_length(file).filter(|&n| n >= 144 && n <= file.len())
}

pub(crate) async fn send(
    ex: &Exchange,
    queue: &str,
    node: &DicomNode,
    transfers: Vec<(Job, TransferJob)>,
) {
    let accepted = accepted(node);
    let mut contexts: BTreeSet<(String, String)> = BTreeSet::new();
    let mut plan = Vec::new();
    for (j, t) in transfers {
        match target_syntax(&t.transfer_syntax, &accepted) {
            Some(ts) => {
                contexts.insert((t.sop_class_uid.clone(), ts.clone()));
                plan.push((j, t, ts));
            }
            None => {
                ex.fail_job(
                    &j,
                    &format!(
                        "{} accepts none of the syntaxes {} can be sent in",
                        node.name, t.transfer_syntax
                    ),
                    true,
                )
                .await
            }
        }
    }
    if plan.is_empty() {
        return;
    }
    let contexts: Vec<(String, Vec<String>)> = contexts
        .into_iter()
        .map(|(sop, ts)| (sop, vec![ts]))
        .collect();
    let addr = format!("{}:{}", node.host, node.port);
    let mut session = match StoreSession::connect(
        &addr,
        &ex.options().ae_title,
        &node.ae_title,
        contexts,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            for (j, _, _) in &plan {
                ex.fail_job(j, &format!("{}: association: {e}", node.name), false)
                    .await;
            }
            return;
        }
    };
    let mut broken: Option<String> = None;
    for (j, t, ts) in plan {
        if let Some(e) = &broken {
            ex.fail_job(&j, e, false).await;
            continue;
        }
        let bytes = match ex.read_blob(&t).await {
            Ok(b) => b,
            Err(e) => {
                ex.fail_job(&j, &format!("reading the instance: {e}"), false)
                    .await;
                continue;
            }
        };
        let bytes = if ts == t.transfer_syntax.trim_end_matches(['\0', ' ']) {
            bytes
        } else {
            match transcode(bytes, &ts).await {
                Ok(b) => b,
                Err(e) => {
                    ex.fail_job(&j, &format!("transcoding to {ts}: {e}"), true)
                        .await;
                    continue;
                }
            }
        };
        let Some(offset) = data_set_offset(&bytes) else {
            ex.fail_job(&j, "not a Part 10 object", true).await;
            continue;
        };
        let mut data: &[u8] = &bytes[offset..];
        match session
            .store(&t.sop_class_uid, &t.sop_instance_uid, &ts, &mut data)
            .await
        {
            Ok(o) if o.is_stored() => {
                let e = ManifestEntry {
                    sop_instance_uid: t.sop_instance_uid.clone(),
                    sha256: t.sha256.clone(),
                    size: t.size,
                };
                ex.complete(
                    queue,
                    &t.study_uid,
                    &[(j, e)],
                    false,
                    &format!("C-STORE status 0x{:04X}", o.status),
                )
                .await;
            }
            Ok(o) => {
                ex.fail_job(
                    &j,
                    &format!(
                        "C-STORE status 0x{:04X}{}",
                        o.status,
                        o.comment.map(|c| format!(": {c}")).unwrap_or_default()
                    ),
                    false,
                )
                .await
            }
            Err(e) => {
                let msg = format!("{}: {e}", node.name);
                ex.fail_job(&j, &msg, false).await;
                broken = Some(msg);
            }
        }
    }
    if broken.is_none() {
        let _ = session.release().await;
    }
}

async fn transcode(bytes: Bytes, ts: &str) -> Result<Bytes, String> {
    let ts = ts.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("object.dcm");
        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
        vesalius_codec::transcode_file(&path, &ts)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_syntax_keeps_accepted_and_transcodes_otherwise() {
        let acc = vec![uid::EXPLICIT_VR_LE.to_owned()];
        assert_eq!(
            target_syntax(uid::EXPLICIT_VR_LE, &acc).as_deref(),
            Some(uid::EXPLICIT_VR_LE)
        );
        // Implicit VR LE can always become explicit.
        assert_eq!(
            target_syntax(uid::IMPLICIT_VR_LE, &acc).as_deref(),
            Some(uid::EXPLICIT_VR_LE)
        );
    }

    #[test]
    fn data_set_offset_reads_the_meta_length() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0, 10, 0, 0, 0]);
        f.extend_from_slice(&[0u8; 10]);
        f.extend_from_slice(b"dataset");
        assert_eq!(data_set_offset(&f), Some(154));
        assert_eq!(data_set_offset(&f[..150]), None);
        assert_eq!(data_set_offset(b"short"), None);
    }
}
