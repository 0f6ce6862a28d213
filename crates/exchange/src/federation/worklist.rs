//! How `GET /api/v1/search` makes a page (issue 6, docs/api-exchange.md "Federated search"),
//! including the worklist's filters and order that come from this site's **arrivals**
//! (deliveries from peers, [`Arrival`]), which no site's QIDO-RS knows. They are applied by the
//! server, before paging, so that every page is full and exact:
//!
//! - `priority=N` and `status=arriving|complete` (**arrival filters**): arrivals are deliveries
//!   *to this site*, so the studies they keep are held here. This site's QIDO-RS is asked for
//!   exactly those studies (List of UID matching, PS3.4 C.2.2.2.2, [`UID_CHUNK`] UIDs a query)
//!   with the other filters; the whole matching list is sorted and paged here and its total is
//!   exact. The peers are then asked for the page's UIDs only, to label each row with every
//!   site holding it. With `site=PEER`, the arrivals sent by PEER.
//! - `status=none` (never delivered here by a peer): the arrivals matching the other filters
//!   here (`h` of them, found as above) are taken out of the merged list, and every site is
//!   asked `offset + limit + h` deep (at most [`MAX_SITE_DEPTH`]), so that the page is still
//!   among what they sent.
//! - `orderby=priority`: the arrivals at a priority above 0 that match the filters (found as
//!   above) head the list, highest priority first, then newest; after them comes the merged
//!   list newest first without those studies. Asking every site `offset + limit` deep
//!   suffices: removing `h` studies from the first `k + h` of a list leaves at least its first
//!   `k`.
//! - `site=PEER`: that peer's answer alone decides which studies are listed; this site is then
//!   asked for the page's UIDs to label the copies held here too. `site=` this site's name is
//!   `scope=local`.
//!
//! Without these parameters a page is made as [`super::SearchPage`] says. Every page's rows
//! carry the arrival of their study at this site (`arrival`, or `null`) and this site's
//! transfers of it (`outgoing`, [`super::outgoing`]), so the worklist needs no second request
//! for its badges and progress.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tower::ServiceExt;
use vesalius_auth::Caller;
use vesalius_core::ErrorKind;
use vesalius_store::registry::{Arrival, Peer};

use super::{
    Federation, SearchPage, SiteAnswer, SiteStatus, first_str, local_answer, local_service, merge,
    study_summary,
};
use crate::api::ApiError;

/// UIDs per List of UID query to this site (keeps the request line under 32 KB).
pub const UID_CHUNK: usize = 400;
/// The deepest a site is asked (`offset + limit` and the arrivals taken out, see the module
/// doc), below the default `max_query_results` (1000) of a site's QIDO-RS.
pub const MAX_SITE_DEPTH: usize = 999;

/// A page's answer, or the response that ends the search (an error, the local engine's
/// refusal).
type Made<T> = Result<T, Box<Response>>;

fn refuse(e: impl Into<ApiError>) -> Box<Response> {
    Box::new(e.into().into_response())
}

/// The delivery states of `status=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Delivered by a peer, the manifest not yet satisfied.
    Arriving,
    /// Delivered by a peer, complete.
    Complete,
    /// Never delivered here by a peer (`status=none`).
    None,
}

impl Delivery {
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "arriving" => Some(Delivery::Arriving),
            "complete" => Some(Delivery::Complete),
            "none" => Some(Delivery::None),
            _ => None,
        }
    }
}

/// The worklist's parameters of a search (see the module doc).
#[derive(Debug, Clone, Default)]
pub(super) struct WorklistFilter {
    /// `priority=N`: delivered at route priority N or more.
    pub min_priority: Option<i32>,
    /// `status=`.
    pub status: Option<Delivery>,
    /// `site=`: held at this site (by name).
    pub site: Option<String>,
}

impl WorklistFilter {
    /// Whether only studies delivered here are kept.
    fn positive(&self) -> bool {
        self.min_priority.is_some()
            || matches!(self.status, Some(Delivery::Arriving | Delivery::Complete))
    }

    /// Whether arrival `a` is kept by the arrival filters (and `site=`: sent by that peer).
    fn admits(&self, a: &Arrival) -> bool {
        self.min_priority.is_none_or(|p| a.priority >= p)
            && match self.status {
                Some(Delivery::Arriving) => a.complete_ms == 0,
                Some(Delivery::Complete) => a.complete_ms > 0,
                Some(Delivery::None) => false,
                None => true,
            }
            && self.site.as_ref().is_none_or(|s| &a.from_peer == s)
    }
}

/// What a search asks, parsed by [`super::search`].
pub(super) struct Ask {
    /// QIDO-RS parameters passed to every site (filters, `includefield`, `fuzzymatching`).
    pub qido: Vec<(String, String)>,
    pub page: SearchPage,
    pub filter: WorklistFilter,
    /// Peers are asked (`scope=network`).
    pub network: bool,
    /// `peers=`: only these.
    pub only: Option<Vec<String>>,
}

/// A UID an arrival may carry into a query (a bad one would fail the whole search).
fn plain_uid(u: &str) -> bool {
    !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn query_string(q: &[(String, String)]) -> Made<String> {
    serde_urlencoded::to_string(q)
        .map_err(|e| refuse(ApiError::new(ErrorKind::BadRequest, e.to_string())))
}

fn uid_of(s: &Value) -> String {
    s["study_instance_uid"].as_str().unwrap_or("").to_owned()
}

impl Federation {
    /// This site's QIDO-RS at study level with `query`, under the caller's own access.
    async fn ask_here(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        query: &str,
    ) -> Made<SiteAnswer> {
        let local =
            self.local.get().cloned().ok_or_else(|| {
                refuse(ApiError::new(ErrorKind::Unavailable, "search is not wired"))
            })?;
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("/studies?{query}"))
            .body(Body::empty())
            .map_err(|e| refuse(ApiError::new(ErrorKind::BadRequest, e.to_string())))?;
        for name in [header::HOST, header::ACCEPT_LANGUAGE] {
            if let Some(v) = headers.get(&name) {
                req.headers_mut().insert(name, v.clone());
            }
        }
        req.extensions_mut().insert(caller.clone());
        let resp = async move { local.oneshot(req).await.unwrap_or_else(|e| match e {}) };
        local_answer(resp, self.site_name(), self.opts.max_json_bytes)
            .await
            .map_err(Box::new)
    }

    /// This site's studies among `uids` that match `qido`, [`UID_CHUNK`] UIDs a query.
    async fn ask_here_for(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        qido: &[(String, String)],
        uids: &[String],
    ) -> Made<SiteAnswer> {
        let mut all = SiteAnswer::new(self.site_name(), true);
        all.status = SiteStatus::Ok;
        for chunk in uids.chunks(UID_CHUNK) {
            let mut q = qido.to_vec();
            q.push(("StudyInstanceUID".into(), chunk.join(",")));
            // Two organisations of this site may each hold a copy of one study.
            q.push(("limit".into(), (2 * chunk.len()).to_string()));
            let a = self.ask_here(caller, headers, &query_string(&q)?).await?;
            all.results.extend(a.results);
            all.elapsed_ms += a.elapsed_ms;
        }
        all.count = all.results.len();
        Ok(all)
    }

    /// Peers' answers for the studies `uids` (labels of a page's rows).
    async fn ask_peers_for(
        &self,
        peers: &[Peer],
        caller: &Caller,
        qido: &[(String, String)],
        uids: &[String],
    ) -> Made<Vec<SiteAnswer>> {
        if peers.is_empty() || uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = qido.to_vec();
        q.push(("StudyInstanceUID".into(), uids.join(",")));
        q.push(("limit".into(), uids.len().to_string()));
        let pq = format!("/dicom-web/studies?{}", query_string(&q)?);
        Ok(self.ask_all(peers, caller, &pq).await)
    }

    /// The org's arrivals by study UID.
    async fn arrivals_of(&self, caller: &Caller) -> Made<HashMap<String, Arrival>> {
        let all = self
            .exchange
            .registry()
            .arrivals(Some(caller.org()), 0)
            .await
            .map_err(refuse)?;
        Ok(all.into_iter().map(|a| (a.study_uid.clone(), a)).collect())
    }

    /// Makes the page `ask` names (see the module doc): the JSON answer of `/api/v1/search`.
    pub(super) async fn search_page(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        mut ask: Ask,
    ) -> Made<Value> {
        let here = self.site_name().to_owned();
        if ask.filter.site.as_deref() == Some(here.as_str()) {
            ask.network = false;
            ask.filter.site = None;
        }
        // `site=PEER`: that peer alone decides what is listed.
        let site_peer = match ask.filter.site.clone() {
            Some(_) if !ask.network => {
                return Err(refuse(ApiError::new(
                    ErrorKind::BadRequest,
                    "site names a peer but scope is local",
                )));
            }
            Some(name) => Some(self.peer_for(caller, &name).await.map_err(refuse)?),
            None => None,
        };
        let peers = if ask.network {
            self.peers_for(caller, ask.only.as_deref())
                .await
                .map_err(refuse)?
        } else {
            Vec::new()
        };
        let arrivals = self.arrivals_of(caller).await?;
        let outgoing = self.outgoing_of(caller).await;
        let service = local_service(self.opts.public_base_url.as_deref(), headers);
        let made = if ask.filter.positive() {
            self.delivered_page(caller, headers, &ask, &peers, &arrivals)
                .await?
        } else {
            self.merged_page(caller, headers, &ask, site_peer, peers, &arrivals)
                .await?
        };
        if ask.network {
            self.audit_search(caller, &query_string(&ask.qido)?, &made.sites);
        }
        let studies: Vec<Value> = made
            .rows(&service, &here)
            .into_iter()
            .map(|mut s| {
                s["arrival"] = arrivals
                    .get(&uid_of(&s))
                    .map(|a| {
                        json!({"from_peer": a.from_peer, "priority": a.priority,
                           "manifest_instances": a.manifest_instances,
                           "complete_ms": a.complete_ms, "updated_ms": a.updated_ms})
                    })
                    .unwrap_or(Value::Null);
                // Issue 6: this site's transfers of a study held here (`super::outgoing`).
                s["outgoing"] = match s["local"].as_bool() {
                    Some(true) => json!(outgoing.get(&uid_of(&s)).cloned().unwrap_or_default()),
                    _ => json!([]),
                };
                s
            })
            .collect();
        let depth = ask.page.offset + ask.page.limit;
        Ok(json!({
            "studies": studies,
            "complete": made.sites.iter().all(|a| a.status == SiteStatus::Ok),
            "sites": made.sites,
            "offset": ask.page.offset,
            "limit": ask.page.limit,
            "more": made.cut || made.known > depth,
            // Exact when no site was cut: every matching study of the sites that answered.
            "total": if made.cut { Value::Null } else { json!(made.known) },
        }))
    }

    /// An arrival filter's page: this site's delivered studies, sorted and paged here, then
    /// labelled by the peers.
    async fn delivered_page(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        ask: &Ask,
        peers: &[Peer],
        arrivals: &HashMap<String, Arrival>,
    ) -> Made<Chosen> {
        let mut kept: Vec<String> = arrivals
            .values()
            .filter(|a| ask.filter.admits(a) && plain_uid(&a.study_uid))
            .map(|a| a.study_uid.clone())
            .collect();
        kept.sort();
        let here = self.ask_here_for(caller, headers, &ask.qido, &kept).await?;
        let mut rows = summaries(std::slice::from_ref(&here), self.site_name());
        ask.page.order_rows(&mut rows, arrivals, true);
        let known = rows.len();
        let page = page_uids(&rows, &ask.page);
        let labels = self.ask_peers_for(peers, caller, &ask.qido, &page).await?;
        let mut sites = vec![here];
        sites.extend(labels);
        Ok(Chosen {
            answers: sites.clone(),
            sites,
            page,
            known,
            cut: false,
        })
    }

    /// A page of the merged list (every site asked deep enough), with `status=none` and
    /// `orderby=priority` applied (see the module doc).
    async fn merged_page(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        ask: &Ask,
        site_peer: Option<Peer>,
        peers: Vec<Peer>,
        arrivals: &HashMap<String, Arrival>,
    ) -> Made<Chosen> {
        let none = ask.filter.status == Some(Delivery::None);
        let head = ask.page.priority && !none;
        // The arrivals to take out of the merged list: all of them (`status=none`), or the
        // prioritised ones that head it.
        let mut out: Vec<String> = arrivals
            .values()
            .filter(|a| {
                none || (head
                    && a.priority > 0
                    && ask.filter.site.as_ref().is_none_or(|s| &a.from_peer == s))
            })
            .map(|a| a.study_uid.clone())
            .filter(|u| plain_uid(u))
            .collect();
        out.sort();
        let taken = if out.is_empty() {
            None
        } else {
            Some(self.ask_here_for(caller, headers, &ask.qido, &out).await?)
        };
        let taken_rows = taken
            .as_ref()
            .map(|t| summaries(std::slice::from_ref(t), self.site_name()))
            .unwrap_or_default();
        let depth = ask.page.offset + ask.page.limit + if none { taken_rows.len() } else { 0 };
        if depth > MAX_SITE_DEPTH {
            return Err(refuse(ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "{} studies delivered by peers match: with the page, more than {MAX_SITE_DEPTH} studies to ask each site (narrow the filters)",
                    taken_rows.len()
                ),
            )));
        }
        // Every member site answers its first `depth` in the page's order (deeper to count),
        // and one more to tell whether it holds more (see `SearchPage`).
        let depth = if ask.page.count {
            depth.max(super::MAX_SEARCH_DEPTH)
        } else {
            depth
        };
        let mut q = ask.qido.clone();
        q.push(("limit".into(), (depth + 1).to_string()));
        if !ask.page.orderby.is_empty() {
            q.push(("orderby".into(), ask.page.orderby.clone()));
        }
        let query = query_string(&q)?;
        let members: Vec<Peer> = match &site_peer {
            Some(p) => vec![p.clone()],
            None => peers,
        };
        let pq = format!("/dicom-web/studies?{query}");
        let mut answers: Vec<SiteAnswer> = if site_peer.is_some() {
            self.ask_all(&members, caller, &pq).await
        } else {
            let (local, remote) = tokio::join!(
                self.ask_here(caller, headers, &query),
                self.ask_all(&members, caller, &pq)
            );
            let mut a = vec![local?];
            a.extend(remote);
            a
        };
        // A site that answered more than the depth may hold more than we know of.
        let cut = answers.iter().any(|a| a.results.len() > depth);
        for a in &mut answers {
            a.results.truncate(depth);
            a.count = a.results.len();
        }
        let mut rows = summaries(&answers, self.site_name());
        let drop: HashSet<String> = if none {
            out.iter().cloned().collect()
        } else {
            taken_rows.iter().map(uid_of).collect()
        };
        rows.retain(|s| !drop.contains(&uid_of(s)));
        ask.page.order_rows(&mut rows, arrivals, false);
        if head {
            let mut first = taken_rows;
            ask.page.order_rows(&mut first, arrivals, true);
            first.extend(rows);
            rows = first;
        }
        let known = rows.len();
        let page = page_uids(&rows, &ask.page);
        let mut sites = answers.clone();
        let mut all = answers;
        if head && let Some(t) = taken {
            all.push(t);
        }
        if site_peer.is_some() {
            // Which of the peer's studies are held here too.
            let here = self.ask_here_for(caller, headers, &ask.qido, &page).await?;
            sites.insert(0, here.clone());
            all.push(here);
        }
        Ok(Chosen {
            answers: all,
            sites,
            page,
            known,
            cut,
        })
    }
}

/// A page chosen: its UIDs in order, and every answer that holds them.
struct Chosen {
    /// The answers the rows are made from (each site's DICOM JSON).
    answers: Vec<SiteAnswer>,
    /// The sites asked, as reported.
    sites: Vec<SiteAnswer>,
    /// The page's studies, in order.
    page: Vec<String>,
    /// Studies known to match (the total when nothing was cut).
    known: usize,
    /// A site held more than it was asked for.
    cut: bool,
}

impl Chosen {
    /// The page's rows, each merged from every answer holding it (this site first, then the
    /// peers by name), in the page's order.
    fn rows(&self, service: &str, here: &str) -> Vec<Value> {
        let want: HashSet<&str> = self.page.iter().map(String::as_str).collect();
        let mut answers: Vec<SiteAnswer> = self
            .answers
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.results.retain(|r| {
                    first_str(r, "0020000D").is_some_and(|u| want.contains(u.as_str()))
                });
                a
            })
            .collect();
        answers.sort_by(|a, b| (!a.local, &a.site).cmp(&(!b.local, &b.site)));
        let mut by_uid: HashMap<String, Value> = merge("0020000D", &answers, service)
            .iter()
            .map(|s| study_summary(s, here))
            .map(|s| (uid_of(&s), s))
            .collect();
        self.page.iter().filter_map(|u| by_uid.remove(u)).collect()
    }
}

/// The merged studies of `answers` as rows (for sorting and choosing a page).
fn summaries(answers: &[SiteAnswer], here: &str) -> Vec<Value> {
    // URLs do not matter here: the page's rows are made again by `Chosen::rows`.
    merge("0020000D", answers, "")
        .iter()
        .map(|s| study_summary(s, here))
        .collect()
}

/// The UIDs of `[offset, offset + limit)` of `rows`.
fn page_uids(rows: &[Value], page: &SearchPage) -> Vec<String> {
    rows.iter()
        .skip(page.offset)
        .take(page.limit)
        .map(uid_of)
        .collect()
}

impl SearchPage {
    /// Sorts `rows` in the page's order; with `orderby=priority` and `by_priority`, the
    /// arrival priority first (highest first, studies without an arrival as 0), then newest.
    fn order_rows(
        &self,
        rows: &mut [Value],
        arrivals: &HashMap<String, Arrival>,
        by_priority: bool,
    ) {
        self.sort(rows);
        if self.priority && by_priority {
            rows.sort_by_key(|s| {
                std::cmp::Reverse(arrivals.get(&uid_of(s)).map_or(0, |a| a.priority.max(0)))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(uid: &str, priority: i32, complete_ms: i64, from: &str) -> Arrival {
        Arrival {
            org: "default".into(),
            study_uid: uid.into(),
            from_peer: from.into(),
            priority,
            manifest_instances: 3,
            complete_ms,
            updated_ms: 1,
        }
    }

    #[test]
    fn arrival_filters_keep_what_they_name() {
        let stroke_done = arrival("1.1", 100, 5, "spoke");
        let routine_arriving = arrival("1.2", 0, 0, "other");
        let f = |p: Option<i32>, s: Option<Delivery>, site: Option<&str>| WorklistFilter {
            min_priority: p,
            status: s,
            site: site.map(str::to_owned),
        };
        assert!(f(Some(50), None, None).admits(&stroke_done));
        assert!(!f(Some(50), None, None).admits(&routine_arriving));
        assert!(f(None, Some(Delivery::Arriving), None).admits(&routine_arriving));
        assert!(!f(None, Some(Delivery::Arriving), None).admits(&stroke_done));
        assert!(f(None, Some(Delivery::Complete), Some("spoke")).admits(&stroke_done));
        assert!(!f(None, Some(Delivery::Complete), Some("other")).admits(&stroke_done));
        // "Never delivered" and a priority keep nothing delivered.
        assert!(!f(Some(0), Some(Delivery::None), None).admits(&stroke_done));
        assert!(f(Some(0), None, None).positive());
        assert!(!f(None, Some(Delivery::None), None).positive());
        assert_eq!(Delivery::parse("here"), None);
    }

    #[test]
    fn priority_order_puts_higher_priorities_first_then_newest() {
        let page = SearchPage {
            priority: true,
            ..SearchPage::default()
        };
        let row = |uid: &str, date: &str| json!({"study_instance_uid": uid, "study_date": date});
        let mut rows = vec![
            row("1.1", "20260101"),
            row("1.2", "20260301"),
            row("1.3", "20260201"),
            row("1.4", "20260401"),
        ];
        let arrivals: HashMap<String, Arrival> = [
            arrival("1.1", 100, 1, "s"),
            arrival("1.3", 50, 1, "s"),
            arrival("1.2", 100, 1, "s"),
        ]
        .into_iter()
        .map(|a| (a.study_uid.clone(), a))
        .collect();
        page.order_rows(&mut rows, &arrivals, true);
        let uids: Vec<String> = rows.iter().map(uid_of).collect();
        assert_eq!(uids, ["1.2", "1.1", "1.3", "1.4"]);
        page.order_rows(&mut rows, &arrivals, false);
        let uids: Vec<String> = rows.iter().map(uid_of).collect();
        assert_eq!(
            uids,
            ["1.4", "1.2", "1.3", "1.1"],
            "newest first without the priority"
        );
        assert!(plain_uid("1.2.840.1") && !plain_uid("1.2,3") && !plain_uid(""));
    }
}
