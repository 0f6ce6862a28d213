//! Route evaluation: which [`Route`]s fire for an arriving instance.
//!
//! A [`RouteSet`] compiles the registry's routes once (globs and `re:` regular expressions,
//! time-of-day windows) and answers [`RouteSet::evaluate`] without I/O, so the ingest observer can
//! run it inside the ingest transaction. Disabled routes, routes of other organisations and
//! quarantine inbox namespaces never fire (issue 4: nothing in an inbox is routed).

use regex::{Regex, RegexBuilder};
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::{InstanceRecord, inbox_owner};
use vesalius_store::query::wildcard_match;
use vesalius_store::registry::{Route, RouteDestination, RouteMatch};

/// A text pattern: glob (case-insensitive) or regular expression (`re:` prefix).
#[derive(Debug, Clone)]
enum Pattern {
    Glob(String),
    Regex(Regex),
}

impl Pattern {
    fn compile(p: &str) -> Result<Pattern, String> {
        match p.strip_prefix("re:") {
            Some(re) => RegexBuilder::new(re)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map(Pattern::Regex)
                .map_err(|e| format!("invalid regular expression {re:?}: {e}")),
            None => Ok(Pattern::Glob(p.trim().to_uppercase())),
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Glob(g) => wildcard_match(g.as_bytes(), v.trim().to_uppercase().as_bytes()),
            Pattern::Regex(r) => r.is_match(v),
        }
    }
}

/// A time-of-day window in minutes since midnight, `[from, to)`, wrapping midnight when
/// `from > to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    from: u32,
    to: u32,
}

impl TimeWindow {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<TimeWindow, String> {
        let bad = || format!("invalid time of day window {s:?} (expected HH:MM-HH:MM)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        Ok(TimeWindow {
            from: minutes(a).ok_or_else(bad)?,
            to: minutes(b).ok_or_else(bad)?,
        })
    }

    /// Whether `minute` (since midnight) lies in the window.
    pub fn contains(&self, minute: u32) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    route: Route,
    calling_ae: Vec<Pattern>,
    called_ae: Vec<Pattern>,
    body_part: Vec<Pattern>,
    study_description: Option<Pattern>,
    station_name: Option<Pattern>,
    time_of_day: Option<TimeWindow>,
}

/// The attributes of an arriving instance routes look at.
#[derive(Debug, Clone, Default)]
pub struct RouteInput {
    /// The calling AE title ("" over HTTP).
    pub calling_ae: String,
    /// The called AE title ("" over HTTP).
    pub called_ae: String,
    /// The owning organisation.
    pub org: String,
    /// Modality.
    pub modality: String,
    /// SOP Class UID.
    pub sop_class: String,
    /// Body Part Examined.
    pub body_part: String,
    /// Study Description.
    pub study_description: String,
    /// Station Name (0008,1010).
    pub station_name: String,
}

impl RouteInput {
    /// The input of an ingested instance. Station Name is read from the precomputed metadata.
    pub fn of(record: &InstanceRecord, ctx: &IngestContext) -> RouteInput {
        RouteInput {
            calling_ae: ctx
                .source
                .strip_prefix("dimse:")
                .unwrap_or_default()
                .to_owned(),
            called_ae: ctx.called_ae.clone(),
            org: record.org.clone(),
            modality: record.series.modality.clone(),
            sop_class: record.instance.sop_class_uid.clone(),
            body_part: record.series.body_part.clone(),
            study_description: record.study.description.clone(),
            station_name: station_name(&record.metadata_json),
        }
    }
}

impl RouteInput {
    /// The attributes of a DICOM Part 10 file, read as the ingest reads them (header only, with
    /// the default parse limits); calling and called AE titles and the organisation are left
    /// empty. Used by `vesalius admin route test` and `POST /api/v1/route-test`.
    pub fn read<R: std::io::Read + std::io::Seek>(
        reader: R,
        len: u64,
    ) -> Result<RouteInput, vesalius_core::Error> {
        use vesalius_core::charset::CharacterSet;
        use vesalius_core::parse::{ParseLimits, parse_file};
        use vesalius_core::tag;
        /// Station Name.
        const STATION_NAME: u32 = 0x0008_1010;
        let parsed = parse_file(reader, len, &ParseLimits::default())?;
        let ds = &parsed.dataset;
        let cs = CharacterSet::from_value(ds.bytes(tag::SPECIFIC_CHARACTER_SET));
        Ok(RouteInput {
            modality: ds.str(tag::MODALITY).unwrap_or("").to_owned(),
            sop_class: ds.str(tag::SOP_CLASS_UID).unwrap_or("").to_owned(),
            body_part: ds.str(tag::BODY_PART_EXAMINED).unwrap_or("").to_owned(),
            study_description: ds.text(&cs, tag::STUDY_DESCRIPTION),
            station_name: ds.text(&cs, STATION_NAME),
            ..RouteInput::default()
        })
    }
}

/// Station Name (0008,1010) from DICOM JSON metadata, "" when absent.
fn station_name(metadata_json: &str) -> String {
    // Cheap pre-check: most objects are parsed only when they carry the tag at all.
    if !metadata_json.contains("\"00081010\"") {
        return String::new();
    }
    serde_json::from_str::<serde_json::Value>(metadata_json)
        .ok()
        .and_then(|v| {
            v.get("00081010")?
                .get("Value")?
                .get(0)?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The compiled routes.
#[derive(Debug, Clone, Default)]
pub struct RouteSet {
    routes: Vec<CompiledRoute>,
}

/// One route that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The route's id.
    pub route_id: String,
    /// Its destinations.
    pub destinations: Vec<RouteDestination>,
    /// Its priority.
    pub priority: i32,
    /// Its de-identification profile.
    pub deid: Option<String>,
}

/// Checks a route's patterns; the error names the first bad one.
pub fn validate(route: &Route) -> Result<(), String> {
    compile(route).map(|_| ())
}

fn compile(route: &Route) -> Result<CompiledRoute, String> {
    let m: &RouteMatch = &route.matcher;
    let list = |ps: &[String]| -> Result<Vec<Pattern>, String> {
        ps.iter().map(|p| Pattern::compile(p)).collect()
    };
    let one = |p: &Option<String>| -> Result<Option<Pattern>, String> {
        p.as_deref().map(Pattern::compile).transpose()
    };
    if route.destinations.is_empty() {
        return Err(format!("route {} has no destination", route.id));
    }
    Ok(CompiledRoute {
        route: route.clone(),
        calling_ae: list(&m.calling_ae)?,
        called_ae: list(&m.called_ae)?,
        body_part: list(&m.body_part)?,
        study_description: one(&m.study_description)?,
        station_name: one(&m.station_name)?,
        time_of_day: m
            .time_of_day
            .as_deref()
            .map(TimeWindow::parse)
            .transpose()?,
    })
}

fn any(ps: &[Pattern], v: &str) -> bool {
    ps.is_empty() || ps.iter().any(|p| p.matches(v))
}

fn listed(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x.trim().eq_ignore_ascii_case(v.trim()))
}

impl RouteSet {
    /// Compiles `routes`; a route that does not compile is left out and reported.
    pub fn new(routes: &[Route]) -> (RouteSet, Vec<String>) {
        let mut errors = Vec::new();
        let routes = routes
            .iter()
            .filter_map(|r| match compile(r) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            })
            .collect();
        (RouteSet { routes }, errors)
    }

    /// Whether there is any route at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes that fire for `input` at `minute_of_day`, in evaluation order.
    pub fn evaluate(&self, input: &RouteInput, minute_of_day: u32) -> Vec<Fired> {
        if inbox_owner(&input.org).is_some() {
            return Vec::new();
        }
        self.routes
            .iter()
            .filter(|c| {
                let r = &c.route;
                let m = &r.matcher;
                r.enabled
                    && r.org == input.org
                    && listed(&m.source_org, &input.org)
                    && listed(&m.modality, &input.modality)
                    && listed(&m.sop_class, &input.sop_class)
                    && any(&c.calling_ae, &input.calling_ae)
                    && any(&c.called_ae, &input.called_ae)
                    && any(&c.body_part, &input.body_part)
                    && c.study_description
                        .as_ref()
                        .is_none_or(|p| p.matches(&input.study_description))
                    && c.station_name
                        .as_ref()
                        .is_none_or(|p| p.matches(&input.station_name))
                    && c.time_of_day.is_none_or(|w| w.contains(minute_of_day))
            })
            .map(|c| Fired {
                route_id: c.route.id.clone(),
                destinations: c.route.destinations.clone(),
                priority: c.route.priority,
                deid: c.route.deid.clone(),
            })
            .collect()
    }
}

/// Minutes since midnight of `now_ms` shifted by `utc_offset_minutes`.
pub fn minute_of_day(now_ms: i64, utc_offset_minutes: i32) -> u32 {
    let minutes = now_ms.div_euclid(60_000) + i64::from(utc_offset_minutes);
    minutes.rem_euclid(24 * 60) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, m: RouteMatch) -> Route {
        Route {
            id: id.into(),
            name: id.into(),
            org: "spoke".into(),
            enabled: true,
            order: 0,
            matcher: m,
            destinations: vec![RouteDestination::Peer("hub".into())],
            priority: 100,
            deid: None,
            managed: false,
            created_ms: 0,
        }
    }

    fn ct_head() -> RouteInput {
        RouteInput {
            calling_ae: "CT_ROOM2".into(),
            called_ae: "VESALIUS".into(),
            org: "spoke".into(),
            modality: "CT".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            body_part: "HEAD".into(),
            study_description: "CT Head non-contrast (stroke)".into(),
            station_name: "CTSTATION".into(),
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let m = RouteMatch {
            modality: vec!["ct".into()],
            body_part: vec!["HEAD".into(), "BRAIN".into()],
            study_description: Some("*stroke*".into()),
            calling_ae: vec!["CT_*".into()],
            ..Default::default()
        };
        let (set, errors) = RouteSet::new(&[route("r", m)]);
        assert!(errors.is_empty());
        assert_eq!(set.evaluate(&ct_head(), 0).len(), 1);
        let mut chest = ct_head();
        chest.body_part = "CHEST".into();
        assert!(set.evaluate(&chest, 0).is_empty());
        let mut mr = ct_head();
        mr.modality = "MR".into();
        assert!(set.evaluate(&mr, 0).is_empty());
        let mut other_org = ct_head();
        other_org.org = "elsewhere".into();
        assert!(set.evaluate(&other_org, 0).is_empty());
    }

    #[test]
    fn regex_station_and_time_window() {
        let m = RouteMatch {
            station_name: Some("re:^ct(station|2)$".into()),
            time_of_day: Some("22:00-06:00".into()),
            ..Default::default()
        };
        let (set, _) = RouteSet::new(&[route("night", m)]);
        assert_eq!(set.evaluate(&ct_head(), 23 * 60).len(), 1);
        assert_eq!(set.evaluate(&ct_head(), 5 * 60 + 59).len(), 1);
        assert!(set.evaluate(&ct_head(), 12 * 60).is_empty());
        let mut other = ct_head();
        other.station_name = "MRSTATION".into();
        assert!(set.evaluate(&other, 23 * 60).is_empty());
    }

    #[test]
    fn inbox_and_disabled_never_fire_and_bad_patterns_are_reported() {
        let (set, _) = RouteSet::new(&[route("all", RouteMatch::default())]);
        let mut inbox = ct_head();
        inbox.org = "spoke.inbox".into();
        assert!(set.evaluate(&inbox, 0).is_empty());
        let mut off = route("off", RouteMatch::default());
        off.enabled = false;
        let (set, _) = RouteSet::new(&[off]);
        assert!(set.evaluate(&ct_head(), 0).is_empty());
        let bad = route(
            "bad",
            RouteMatch {
                study_description: Some("re:(".into()),
                ..Default::default()
            },
        );
        let (set, errors) = RouteSet::new(&[bad]);
        assert!(set.is_empty());
        assert!(errors[0].contains("regular expression"), "{errors:?}");
        assert!(TimeWindow::parse("25:00-01:00").is_err());
    }

    #[test]
    fn minute_of_day_with_offset() {
        assert_eq!(minute_of_day(0, 0), 0);
        assert_eq!(minute_of_day(90 * 60_000, 60), 150);
        assert_eq!(minute_of_day(0, -60), 23 * 60);
    }

    #[test]
    fn station_name_from_metadata() {
        assert_eq!(
            station_name(r#"{"00081010":{"vr":"SH","Value":["CT2"]}}"#),
            "CT2"
        );
        assert_eq!(station_name("{}"), "");
    }
}
