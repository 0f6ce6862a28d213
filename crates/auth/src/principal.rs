//! [`Principal`]: the authenticated party a request or association acts as.
//!
//! A principal is made by the [`crate::Authenticator`] from a credential and is what the
//! [`crate::policy`] decides on. It carries the [`Actor`] to write into audit events, so that
//! every entry point records "who" the same way.

use vesalius_store::audit::{Actor, ActorKind};
use vesalius_store::directory::{Role, UserId};
use vesalius_store::model::OrgId;

/// How a principal authenticated, with what the policy needs to know about the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A logged-in user (session cookie).
    Session {
        /// The user.
        user_id: UserId,
    },
    /// An API token acting for a user.
    Token {
        /// The token's public id.
        token_id: String,
        /// The user it acts for.
        user_id: UserId,
    },
    /// A DICOM application entity, by calling AE title.
    Ae {
        /// The calling AE title (trimmed).
        ae_title: String,
        /// Whether it may query and retrieve (C-FIND/C-GET/C-MOVE), not only store.
        may_query: bool,
    },
    /// A share link: sees one study.
    ShareLink {
        /// The link id.
        link_id: String,
        /// The study it opens (of the principal's org).
        study_uid: String,
        /// Whether it may also download (export) the study.
        allow_download: bool,
    },
    /// A guest upload link: uploads into its organisation's quarantine inbox.
    UploadLink {
        /// The link id.
        link_id: String,
    },
    /// A peer site (another Vesalius site, by its signed request token): acts as a service in
    /// the local organisation it is registered with.
    Peer {
        /// The peer's name in the registry.
        name: String,
        /// Whether it may search and retrieve (federated search, remote viewing), not only
        /// store.
        may_query: bool,
        /// The request names one of the peer's users it is made for (the signed token's
        /// `sub` claims, [`crate::peer::OnBehalf`]): a federated search, a remote view, or a
        /// key image or measurement report that user saves into a study held here (issue 6),
        /// which a peer registered with `may_query` may do ([`crate::Action::Annotate`]).
        for_user: bool,
    },
    /// The server itself and local administration (`vesalius admin` on the data directory).
    System,
}

/// An authenticated party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as written into audit events.
    pub actor: Actor,
    /// How it authenticated.
    pub kind: PrincipalKind,
    /// The organisation it acts in (`None` for the system).
    pub org: Option<OrgId>,
    /// The role it acts with (users and tokens; AE titles and peers act as [`Role::Service`]).
    pub role: Option<Role>,
    /// The user, for sessions and tokens.
    pub user_id: Option<UserId>,
    /// The user must change their password first: the policy refuses everything until then.
    pub must_change_password: bool,
    /// A logged-in site administrator (issue 6, [`vesalius_store::directory::User::site_admin`]):
    /// may also make site-level changes. Set for sessions only, never for API tokens (a token
    /// can be issued by an organisation's administrator, who must not get site rights that
    /// way).
    pub site_admin: bool,
}

impl Principal {
    /// The server itself: allowed everything, audited as `system`.
    pub fn system() -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::System,
                id: "system".into(),
                name: "system".into(),
                org: String::new(),
                role: String::new(),
            },
            kind: PrincipalKind::System,
            org: None,
            role: None,
            user_id: None,
            must_change_password: false,
            site_admin: false,
        }
    }

    /// A logged-in user acting in `org` with `role`.
    pub fn session(user_id: &str, username: &str, org: &str, role: Role) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::User,
                id: user_id.into(),
                name: username.into(),
                org: org.into(),
                role: role.as_str().into(),
            },
            kind: PrincipalKind::Session {
                user_id: user_id.into(),
            },
            org: Some(org.into()),
            role: Some(role),
            user_id: Some(user_id.into()),
            must_change_password: false,
            site_admin: false,
        }
    }

    /// An API token of a user, acting in `org` with `role`.
    pub fn token(token_id: &str, user_id: &str, username: &str, org: &str, role: Role) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::Token,
                id: token_id.into(),
                name: username.into(),
                org: org.into(),
                role: role.as_str().into(),
            },
            kind: PrincipalKind::Token {
                token_id: token_id.into(),
                user_id: user_id.into(),
            },
            org: Some(org.into()),
            role: Some(role),
            user_id: Some(user_id.into()),
            must_change_password: false,
            site_admin: false,
        }
    }

    /// A calling AE title of `org`.
    pub fn ae(ae_title: &str, org: &str, may_query: bool) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::Ae,
                id: ae_title.into(),
                name: ae_title.into(),
                org: org.into(),
                role: Role::Service.as_str().into(),
            },
            kind: PrincipalKind::Ae {
                ae_title: ae_title.into(),
                may_query,
            },
            org: Some(org.into()),
            role: Some(Role::Service),
            user_id: None,
            must_change_password: false,
            site_admin: false,
        }
    }

    /// A share link on `study_uid` of `org`.
    pub fn share_link(link_id: &str, org: &str, study_uid: &str, allow_download: bool) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::Link,
                id: link_id.into(),
                name: "share-link".into(),
                org: org.into(),
                role: String::new(),
            },
            kind: PrincipalKind::ShareLink {
                link_id: link_id.into(),
                study_uid: study_uid.into(),
                allow_download,
            },
            org: Some(org.into()),
            role: None,
            user_id: None,
            must_change_password: false,
            site_admin: false,
        }
    }

    /// A guest upload link into `org`'s quarantine.
    pub fn upload_link(link_id: &str, org: &str) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::Link,
                id: link_id.into(),
                name: "upload-link".into(),
                org: org.into(),
                role: String::new(),
            },
            kind: PrincipalKind::UploadLink {
                link_id: link_id.into(),
            },
            org: Some(org.into()),
            role: None,
            user_id: None,
            must_change_password: false,
            site_admin: false,
        }
    }

    /// A peer site acting in the local organisation `org` (its registry entry's `org`), audited
    /// as `peer:NAME`.
    pub fn peer(name: &str, org: &str, may_query: bool) -> Self {
        Principal {
            actor: Actor {
                kind: ActorKind::Peer,
                id: name.into(),
                name: format!("peer:{name}"),
                org: org.into(),
                role: Role::Service.as_str().into(),
            },
            kind: PrincipalKind::Peer {
                name: name.into(),
                may_query,
                for_user: false,
            },
            org: Some(org.into()),
            role: Some(Role::Service),
            user_id: None,
            must_change_password: false,
            site_admin: false,
        }
    }

    /// Whether this is the server itself.
    pub fn is_system(&self) -> bool {
        matches!(self.kind, PrincipalKind::System)
    }

    /// The organisation acted in, or "".
    pub fn org_str(&self) -> &str {
        self.org.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_name_the_party() {
        let p = Principal::token("tok123456789", "u1", "alice", "a", Role::Clinician);
        assert_eq!(p.actor.kind, ActorKind::Token);
        assert_eq!(p.actor.id, "tok123456789");
        assert_eq!(p.actor.role, "clinician");
        assert_eq!(p.user_id.as_deref(), Some("u1"));
        assert!(Principal::system().is_system());
        let peer = Principal::peer("hub", "a", false);
        assert_eq!(peer.org_str(), "a");
        assert_eq!(peer.actor.kind, ActorKind::Peer);
        assert_eq!(
            (peer.actor.id.as_str(), peer.actor.name.as_str()),
            ("hub", "peer:hub")
        );
        assert_eq!(Principal::ae("CT1", "a", false).role, Some(Role::Service));
    }
}
