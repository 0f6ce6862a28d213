//! Association negotiation as the acceptor (PS3.8 7.1.1, 9.3.2-9.3.4; PS3.7 D.3.3): presentation
//! contexts, Maximum Length, SCP/SCU role selection, AE title checks, and the busy refusal.

use std::collections::HashSet;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PresentationContextResult, PresentationContextResultReason,
    RequestorRoles, UserVariableItem,
};
use dicom_ul::{Pdu, write_pdu};
use tokio::io::AsyncWriteExt;

use super::{
    APPLICATION_CONTEXT, AcceptOptions, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME,
    MIN_PEER_PDU, PresentationContext, clamp_local, effective_peer_max,
};

/// What an acceptor's admission check sees of an A-ASSOCIATE-RQ (PS3.8 9.3.2, PS3.7 D.3.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Calling AE Title, trimmed (PS3.5 6.2: surrounding spaces are not significant).
    pub calling_ae: String,
    /// Called AE Title, trimmed.
    pub called_ae: String,
    /// The requestor's Implementation Class UID ("" when absent).
    pub implementation_class_uid: String,
    /// The requestor's Implementation Version Name ("" when absent).
    pub implementation_version_name: String,
}

impl RequestInfo {
    pub(super) fn of(rq: &AssociationRQ) -> Self {
        let mut info = RequestInfo {
            calling_ae: rq.calling_ae_title.trim().to_owned(),
            called_ae: rq.called_ae_title.trim().to_owned(),
            ..Default::default()
        };
        for uv in &rq.user_variables {
            match uv {
                UserVariableItem::ImplementationClassUID(u) => {
                    info.implementation_class_uid = u.trim_end_matches('\0').trim().to_owned();
                }
                UserVariableItem::ImplementationVersionName(v) => {
                    info.implementation_version_name = v.trim_end_matches('\0').trim().to_owned();
                }
                _ => {}
            }
        }
        info
    }

    /// What the requestor runs, as a user agent for audit events: the Implementation Version
    /// Name, else the Implementation Class UID.
    pub fn user_agent(&self) -> &str {
        if self.implementation_version_name.is_empty() {
            &self.implementation_class_uid
        } else {
            &self.implementation_version_name
        }
    }
}

/// An admission check's refusal: the A-ASSOCIATE-RJ fields (PS3.8 9.3.4, Table 9-21) and why,
/// for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1 rejected-permanent, 2 rejected-transient.
    pub result: u8,
    /// 1 service-user, 2 service-provider (ACSE), 3 service-provider (presentation).
    pub source: u8,
    /// The reason within the source, e.g. 3 calling-AE-title-not-recognized (source 1).
    pub reason: u8,
    /// Why, in words (logged; never sent).
    pub why: String,
}

impl Refusal {
    /// The A-ASSOCIATE-RJ PDU. A combination PS3.8 does not define becomes "rejected-permanent,
    /// service-user, no reason given".
    pub fn to_pdu(&self) -> AssociationRJ {
        use AssociationRJServiceUserReason as User;
        use dicom_ul::pdu::AssociationRJServiceProviderASCEReason as Acse;
        use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Presentation;
        let result = if self.result == 2 {
            AssociationRJResult::Transient
        } else {
            AssociationRJResult::Permanent
        };
        let source = match (self.source, self.reason) {
            (1, 2) => AssociationRJSource::ServiceUser(User::ApplicationContextNameNotSupported),
            (1, 3) => AssociationRJSource::ServiceUser(User::CallingAETitleNotRecognized),
            (1, 7) => AssociationRJSource::ServiceUser(User::CalledAETitleNotRecognized),
            (2, 1) => AssociationRJSource::ServiceProviderASCE(Acse::NoReasonGiven),
            (2, 2) => AssociationRJSource::ServiceProviderASCE(Acse::ProtocolVersionNotSupported),
            (3, 1) => {
                AssociationRJSource::ServiceProviderPresentation(Presentation::TemporaryCongestion)
            }
            (3, 2) => {
                AssociationRJSource::ServiceProviderPresentation(Presentation::LocalLimitExceeded)
            }
            _ => AssociationRJSource::ServiceUser(User::NoReasonGiven),
        };
        AssociationRJ { result, source }
    }
}

pub(super) struct Negotiated {
    pub(super) ac: AssociationAC,
    pub(super) contexts: Vec<PresentationContext>,
    pub(super) peer_max_pdu: u32,
    pub(super) requestor_scp: HashSet<String>,
}

fn reject(
    result: AssociationRJResult,
    source: AssociationRJSource,
    why: String,
) -> (AssociationRJ, String) {
    (AssociationRJ { result, source }, why)
}

/// Negotiates an A-ASSOCIATE-RQ (PS3.8 7.1.1, PS3.7 D.3.3).
pub(super) fn negotiate(
    rq: &AssociationRQ,
    opts: &AcceptOptions,
) -> Result<Negotiated, (AssociationRJ, String)> {
    use AssociationRJResult::Permanent;
    use AssociationRJSource::ServiceUser;
    if rq.protocol_version & 1 == 0 {
        return Err(reject(
            Permanent,
            AssociationRJSource::ServiceProviderASCE(
                dicom_ul::pdu::AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
            format!("protocol version {}", rq.protocol_version),
        ));
    }
    if rq.application_context_name.trim_end_matches('\0') != APPLICATION_CONTEXT {
        return Err(reject(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
            format!("application context {}", rq.application_context_name),
        ));
    }
    let called = rq.called_ae_title.trim();
    if !opts.accept_any_called_ae && called != opts.ae_title.trim() {
        return Err(reject(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
            format!("called AE title {called:?} is not {:?}", opts.ae_title),
        ));
    }
    let mut announced = None;
    let mut replies = vec![
        UserVariableItem::MaxLength(clamp_local(opts.max_pdu_length)),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.into()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.into()),
    ];
    let mut requestor_scp = HashSet::new();
    for uv in &rq.user_variables {
        match uv {
            UserVariableItem::MaxLength(n) => announced = Some(*n),
            UserVariableItem::ScuScpRoleSelectionSubItem(class, roles) => {
                let class = class.trim_end_matches('\0').to_owned();
                // PS3.7 D.3.3.4: we may only narrow what was proposed.
                let scp = roles.scp && opts.requestor_scp_classes.contains(&class);
                if scp {
                    requestor_scp.insert(class.clone());
                }
                replies.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                    class,
                    RequestorRoles {
                        scu: roles.scu,
                        scp,
                    },
                ));
            }
            _ => {}
        }
    }
    let peer_max_pdu = effective_peer_max(announced);
    if peer_max_pdu < MIN_PEER_PDU {
        return Err(reject(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
            format!("Maximum Length {peer_max_pdu} is unusable"),
        ));
    }
    let mut contexts = Vec::new();
    let mut results = Vec::new();
    let mut seen = HashSet::new();
    for pc in &rq.presentation_contexts {
        let abs = vesalius_core::uid::trim_uid(&pc.abstract_syntax);
        let (reason, ts) = match opts.syntaxes.get(abs) {
            _ if !seen.insert(pc.id) || pc.id % 2 == 0 => {
                (PresentationContextResultReason::NoReason, None)
            }
            None => (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                None,
            ),
            Some(ours) => match choose(pc, ours, opts, &requestor_scp, abs) {
                Some(t) => (
                    PresentationContextResultReason::Acceptance,
                    Some(t.to_owned()),
                ),
                None => (
                    PresentationContextResultReason::TransferSyntaxesNotSupported,
                    None,
                ),
            },
        };
        if let Some(ts) = &ts {
            contexts.push(PresentationContext {
                id: pc.id,
                abstract_syntax: abs.to_owned(),
                transfer_syntax: ts.clone(),
            });
        }
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            transfer_syntax: ts.unwrap_or_else(|| vesalius_core::uid::IMPLICIT_VR_LE.to_owned()),
        });
    }
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.into(),
        presentation_contexts: results,
        user_variables: replies,
    };
    Ok(Negotiated {
        ac,
        contexts,
        peer_max_pdu,
        requestor_scp,
    })
}

/// The transfer syntax accepted for a proposed context: the first proposed one we accept, except
/// that for a storage class whose SCP role the requestor takes (C-GET), the first one satisfying
/// [`AcceptOptions::retrieve_preference`] wins when there is one.
fn choose<'a>(
    pc: &'a dicom_ul::pdu::PresentationContextProposed,
    ours: &[String],
    opts: &AcceptOptions,
    requestor_scp: &HashSet<String>,
    abstract_syntax: &str,
) -> Option<&'a str> {
    let mut acceptable = pc
        .transfer_syntaxes
        .iter()
        .map(|t| vesalius_core::uid::trim_uid(t))
        .filter(|t| ours.iter().any(|o| o == t));
    let first = acceptable.next()?;
    if let Some(prefer) = opts.retrieve_preference
        && requestor_scp.contains(abstract_syntax)
        && !prefer(first)
    {
        return Some(acceptable.find(|t| prefer(t)).unwrap_or(first));
    }
    Some(first)
}

/// Writes an A-ASSOCIATE-RJ "local limit exceeded, transient" (PS3.8 9.3.4) to a socket we
/// cannot serve now, without reading its request. The caller set `TCP_NODELAY` (and, for DICOM
/// TLS, completed the handshake).
pub async fn refuse_busy(mut socket: impl super::Transport) {
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    if write_pdu(&mut buf, &rj).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.write_all(&buf)).await;
    }
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::association::SEND_PDU_CAP;
    use dicom_ul::pdu::PresentationContextProposed;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn opts() -> AcceptOptions {
        let mut syntaxes = HashMap::new();
        syntaxes.insert(
            "1.2.840.10008.1.1".to_owned(),
            Arc::new(vec!["1.2.840.10008.1.2".to_owned()]),
        );
        syntaxes.insert(
            "1.2.840.10008.5.1.4.1.1.2".to_owned(),
            Arc::new(vec![
                "1.2.840.10008.1.2.1".to_owned(),
                "1.2.840.10008.1.2.4.50".to_owned(),
            ]),
        );
        AcceptOptions {
            ae_title: "VESALIUS".into(),
            max_pdu_length: 65536,
            syntaxes,
            requestor_scp_classes: ["1.2.840.10008.5.1.4.1.1.2".to_owned()].into(),
            ..Default::default()
        }
    }

    fn rq(called: &str, max: u32) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![
                PresentationContextProposed {
                    id: 1,
                    abstract_syntax: "1.2.840.10008.1.1".into(),
                    transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
                },
                PresentationContextProposed {
                    id: 3,
                    abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntaxes: vec![
                        "1.2.840.10008.1.2.4.50".into(),
                        "1.2.840.10008.1.2.1".into(),
                    ],
                },
                PresentationContextProposed {
                    id: 5,
                    abstract_syntax: "1.2.3.4".into(),
                    transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
                },
            ],
            user_variables: vec![
                UserVariableItem::MaxLength(max),
                UserVariableItem::ScuScpRoleSelectionSubItem(
                    "1.2.840.10008.5.1.4.1.1.2".into(),
                    RequestorRoles {
                        scu: false,
                        scp: true,
                    },
                ),
            ],
        }
    }

    #[test]
    fn negotiation_picks_the_first_proposed_syntax_we_accept() {
        let n = negotiate(&rq("VESALIUS", 16384), &opts()).ok().unwrap();
        assert_eq!(n.contexts.len(), 1);
        assert_eq!(n.contexts[0].id, 3);
        assert_eq!(n.contexts[0].transfer_syntax, "1.2.840.10008.1.2.4.50");
        let reasons: Vec<_> =
            n.ac.presentation_contexts
                .iter()
                .map(|r| r.reason.clone())
                .collect();
        assert_eq!(
            reasons,
            vec![
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                PresentationContextResultReason::Acceptance,
                PresentationContextResultReason::AbstractSyntaxNotSupported,
            ]
        );
        assert_eq!(n.peer_max_pdu, 16384);
        assert!(n.requestor_scp.contains("1.2.840.10008.5.1.4.1.1.2"));
    }

    #[test]
    fn retrieve_preference_overrides_the_first_choice_for_scp_roles() {
        let mut o = opts();
        o.retrieve_preference = Some(|ts: &str| ts == "1.2.840.10008.1.2.1");
        let n = negotiate(&rq("VESALIUS", 16384), &o).ok().unwrap();
        assert_eq!(n.contexts[0].transfer_syntax, "1.2.840.10008.1.2.1");
        // Without the SCP role, the requestor's first choice stands.
        let mut plain = rq("VESALIUS", 16384);
        plain.user_variables.truncate(1);
        let n = negotiate(&plain, &o).ok().unwrap();
        assert_eq!(n.contexts[0].transfer_syntax, "1.2.840.10008.1.2.4.50");
    }

    #[test]
    fn refusals_carry_their_ps3_8_fields() {
        let r = |result, source, reason| Refusal {
            result,
            source,
            reason,
            why: String::new(),
        };
        let calling = r(1, 1, 3).to_pdu();
        assert_eq!(calling.result, AssociationRJResult::Permanent);
        assert_eq!(
            calling.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        assert_eq!(
            r(1, 1, 7).to_pdu().source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        );
        let busy = r(2, 3, 1).to_pdu();
        assert_eq!(busy.result, AssociationRJResult::Transient);
        assert_eq!(
            busy.source,
            AssociationRJSource::ServiceProviderPresentation(
                dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::TemporaryCongestion
            )
        );
        // Undefined combinations fall back to "no reason given".
        assert_eq!(
            r(1, 9, 9).to_pdu().source,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven)
        );
    }

    #[test]
    fn request_info_names_the_implementation() {
        let mut q = rq(" VESALIUS ", 16384);
        q.calling_ae_title = " CT1 ".into();
        q.user_variables
            .push(UserVariableItem::ImplementationClassUID("1.2.3\0".into()));
        let info = RequestInfo::of(&q);
        assert_eq!(
            (info.calling_ae.as_str(), info.called_ae.as_str()),
            ("CT1", "VESALIUS")
        );
        assert_eq!(info.user_agent(), "1.2.3");
        q.user_variables
            .push(UserVariableItem::ImplementationVersionName(
                "OFFIS_DCMTK_367".into(),
            ));
        assert_eq!(RequestInfo::of(&q).user_agent(), "OFFIS_DCMTK_367");
    }

    #[test]
    fn negotiation_refuses_wrong_called_ae_and_tiny_pdus() {
        assert!(negotiate(&rq("OTHER", 16384), &opts()).is_err());
        let mut any = opts();
        any.accept_any_called_ae = true;
        assert!(negotiate(&rq("OTHER", 16384), &any).is_ok());
        assert!(negotiate(&rq("VESALIUS", 10), &opts()).is_err());
        assert_eq!(
            negotiate(&rq("VESALIUS", 0), &opts())
                .ok()
                .unwrap()
                .peer_max_pdu,
            SEND_PDU_CAP
        );
        assert_eq!(
            negotiate(&rq("VESALIUS", u32::MAX), &opts())
                .ok()
                .unwrap()
                .peer_max_pdu,
            SEND_PDU_CAP
        );
    }
}
