//! `vesalius admin route …`: the rules that turn an arriving instance into transfers to peers,
//! DICOM nodes or analyses (`vesalius_exchange::route`).
//!
//! `route add` refuses a route whose patterns do not compile or whose `peer:`/`node:`/`prefetch:`
//! destinations are not registered (a node must also belong to the route's organisation);
//! `analysis:` destinations are taken as they are. `route test` evaluates the registered routes
//! against DICOM files, the way the ingest would, without storing or sending anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;
use vesalius_exchange::route::{RouteInput, RouteSet, minute_of_day, validate};
use vesalius_store::Registry;
use vesalius_store::registry::{RegistryChange, Route, RouteDestination, RouteMatch};

use super::context::{AdminContext, print_json};
use super::site::{apply_registry_change, check_slug};
use crate::config::Config;

/// Route commands.
#[derive(Subcommand)]
pub enum RouteCommand {
    /// Add (or replace) a route, e.g. `route add ct-head-to-hub --org st-marys --to peer:hub
    /// --modality CT --body-part HEAD --priority 100`.
    Add(Box<AddArgs>),
    /// List the routes in evaluation order.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a route.
    Remove {
        /// The route's id.
        id: String,
    },
    /// Show which routes would fire for DICOM files (nothing is stored or sent).
    Test {
        /// DICOM Part 10 files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The organisation the files would be stored into; default: every organisation that
        /// has routes.
        #[arg(long)]
        org: Option<String>,
        /// The calling AE title of the sender ("" as over HTTP).
        #[arg(long, default_value = "")]
        calling_ae: String,
        /// The called AE title (ours, as the sender addressed us).
        #[arg(long, default_value = "")]
        called_ae: String,
        /// Evaluate at this site time of day (`HH:MM`) instead of now.
        #[arg(long, value_name = "HH:MM")]
        at: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The arguments of `route add`. Lists take several values, comma separated or repeated; text
/// patterns are globs (`*`, `?`, case-insensitive) or, with a `re:` prefix, regular expressions.
#[derive(clap::Args)]
pub struct AddArgs {
    /// Id: 1-64 lower-case letters, digits and '-'.
    id: String,
    /// The organisation whose data the route sends.
    #[arg(long)]
    org: String,
    /// Destinations: `peer:NAME`, `node:NAME`, `analysis:NAME`, or
    /// `prefetch:NODE[?max=N&years=Y&match=CRITERIA]` (when a study arrives, fetch the
    /// patient's N most recent relevant priors from that DICOM node; CRITERIA are
    /// `modality`, `body-part`, `description`, `procedure`, `laterality`, comma separated,
    /// all must hold).
    #[arg(long, required = true, value_name = "DEST,...")]
    to: Vec<String>,
    /// Display name (default: the id).
    #[arg(long)]
    name: Option<String>,
    /// Priority of the transfers (higher first): 0 routine, 100 stroke.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Evaluation order (lower first); every matching route fires.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    order: i32,
    /// Modalities (0008,0060), e.g. CT,MR.
    #[arg(long, value_delimiter = ',')]
    modality: Vec<String>,
    /// Body Part Examined (0018,0015) patterns, e.g. HEAD,BRAIN.
    #[arg(long, value_delimiter = ',')]
    body_part: Vec<String>,
    /// SOP Class UIDs.
    #[arg(long, value_delimiter = ',')]
    sop_class: Vec<String>,
    /// Calling AE title patterns (the sender's).
    #[arg(long, value_delimiter = ',')]
    calling_ae: Vec<String>,
    /// Called AE title patterns (ours, as the sender addressed us).
    #[arg(long, value_delimiter = ',')]
    called_ae: Vec<String>,
    /// Study Description (0008,1030) pattern.
    #[arg(long)]
    study_description: Option<String>,
    /// Station Name (0008,1010) pattern.
    #[arg(long)]
    station_name: Option<String>,
    /// Time of day window `HH:MM-HH:MM` (site clock); may wrap midnight.
    #[arg(long)]
    time_of_day: Option<String>,
    /// De-identify before sending with this profile (`basic`, or e.g. `basic,retain-uids`).
    #[arg(long)]
    deid: Option<String>,
    /// Add it disabled (it never fires).
    #[arg(long)]
    disabled: bool,
}

/// One route that fired for a file, as `route test` prints it.
#[derive(Debug, Serialize)]
struct FiredView {
    route: String,
    org: String,
    destinations: Vec<String>,
    priority: i32,
    deid: Option<String>,
}

/// The result of `route test` for one file.
#[derive(Debug, Serialize)]
struct TestView {
    file: String,
    modality: String,
    body_part: String,
    sop_class: String,
    study_description: String,
    station_name: String,
    fired: Vec<FiredView>,
}

/// Runs a route command.
pub async fn run(cx: &AdminContext, cfg: &Config, cmd: RouteCommand) -> Result<()> {
    match cmd {
        RouteCommand::Add(a) => add(cx, *a).await,
        RouteCommand::List { json } => {
            let routes = cx.index.routes().await?;
            if json {
                return print_json(&routes);
            }
            if routes.is_empty() {
                println!("no routes");
            }
            for r in &routes {
                println!(
                    "{:<24} {:<16} {:<8} order {:<4} priority {:<4} -> {:<32} {}",
                    r.id,
                    r.org,
                    if r.enabled { "enabled" } else { "disabled" },
                    r.order,
                    r.priority,
                    destinations(&r.destinations).join(","),
                    describe(&r.matcher, r.deid.as_deref())
                );
            }
            Ok(())
        }
        RouteCommand::Remove { id } => {
            check_slug("route id", &id)?;
            let Some(old) = cx.index.routes().await?.into_iter().find(|r| r.id == id) else {
                bail!("no route {id} (vesalius admin route list)");
            };
            apply_registry_change(
                cx,
                vec![RegistryChange::DeleteRoute(id.clone())],
                "route-remove",
                &old.org,
                json!({ "route": id }),
            )
            .await?;
            println!("removed route {id}");
            Ok(())
        }
        RouteCommand::Test {
            files,
            org,
            calling_ae,
            called_ae,
            at,
            json,
        } => {
            let routes = cx.index.routes().await?;
            let (set, errors) = RouteSet::new(&routes);
            for e in errors {
                eprintln!("warning: a route is left out: {e}");
            }
            let minute = match at.as_deref() {
                Some(t) => parse_minute(t)?,
                None => minute_of_day(vesalius_exchange::now_ms(), cfg.site.utc_offset_minutes),
            };
            let orgs: Vec<String> = match org {
                Some(o) => vec![o],
                None => {
                    let mut o: Vec<String> = routes.iter().map(|r| r.org.clone()).collect();
                    o.sort();
                    o.dedup();
                    o
                }
            };
            let mut views = Vec::new();
            for f in &files {
                let mut input = read_input(f)?;
                input.calling_ae = calling_ae.trim().to_owned();
                input.called_ae = called_ae.trim().to_owned();
                let mut fired = Vec::new();
                for o in &orgs {
                    input.org = o.clone();
                    fired.extend(set.evaluate(&input, minute).into_iter().map(|x| FiredView {
                        route: x.route_id,
                        org: o.clone(),
                        destinations: destinations(&x.destinations),
                        priority: x.priority,
                        deid: x.deid,
                    }));
                }
                views.push(TestView {
                    file: f.display().to_string(),
                    modality: input.modality,
                    body_part: input.body_part,
                    sop_class: input.sop_class,
                    study_description: input.study_description,
                    station_name: input.station_name,
                    fired,
                });
            }
            if json {
                return print_json(&views);
            }
            println!("at {:02}:{:02} (site time)", minute / 60, minute % 60);
            for v in &views {
                println!(
                    "{} ({} {} {:?})",
                    v.file, v.modality, v.body_part, v.study_description
                );
                if v.fired.is_empty() {
                    println!("  no route fires");
                }
                for x in &v.fired {
                    println!(
                        "  {} ({}) -> {} priority {}{}",
                        x.route,
                        x.org,
                        x.destinations.join(","),
                        x.priority,
                        x.deid
                            .as_deref()
                            .map(|d| format!(", de-identified ({d})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}

async fn add(cx: &AdminContext, a: AddArgs) -> Result<()> {
    check_slug("route id", &a.id)?;
    cx.require_org(&a.org).await?;
    let route = build_route(a, cx.auth.now_ms())?;
    // Destinations must exist: a route to nowhere would park every job it makes.
    if let Some(p) = vesalius_exchange::check::destination_problem(&*cx.index, &route).await? {
        bail!("{p} (vesalius admin peer|node list)");
    }
    let old = cx
        .index
        .routes()
        .await?
        .into_iter()
        .find(|r| r.id == route.id);
    let route = Route {
        created_ms: old.as_ref().map_or(route.created_ms, |o| o.created_ms),
        ..route
    };
    let details = json!({
        "route": route.id,
        "name": route.name,
        "enabled": route.enabled,
        "order": route.order,
        "priority": route.priority,
        "destinations": destinations(&route.destinations),
        "matcher": route.matcher,
        "deid": route.deid,
        "replaced": old.is_some(),
    });
    let org = route.org.clone();
    apply_registry_change(
        cx,
        vec![RegistryChange::PutRoute(route.clone())],
        "route-add",
        &org,
        details,
    )
    .await?;
    println!(
        "{} route {} of {org} -> {}{}",
        if old.is_some() { "replaced" } else { "added" },
        route.id,
        destinations(&route.destinations).join(","),
        if route.enabled { "" } else { " (disabled)" }
    );
    if old.is_some_and(|o| o.managed) {
        eprintln!(
            "note: route {} is also in the configuration file, which puts its own version back \
             at the next start",
            route.id
        );
    }
    Ok(())
}

/// The route `a` describes, checked on its own (patterns, window, destinations' syntax, the
/// de-identification profile); whether its destinations exist is checked by the caller.
fn build_route(a: AddArgs, now_ms: i64) -> Result<Route> {
    let list = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut dests = Vec::new();
    let to: Vec<String> =
        a.to.iter()
            .flat_map(|t| vesalius_store::registry::split_destinations(t))
            .collect();
    for t in list(to) {
        let d = RouteDestination::parse_checked(&t).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        if !dests.contains(&d) {
            dests.push(d);
        }
    }
    let deid = text(a.deid);
    if let Some(p) = &deid {
        vesalius_exchange::worker::deid_options(p, b"check")
            .map_err(|e| anyhow::anyhow!("--deid {p:?}: {e}"))?;
    }
    let route = Route {
        name: text(a.name).unwrap_or_else(|| a.id.clone()),
        id: a.id,
        org: a.org,
        enabled: !a.disabled,
        order: a.order,
        matcher: RouteMatch {
            calling_ae: list(a.calling_ae),
            called_ae: list(a.called_ae),
            source_org: Vec::new(),
            modality: list(a.modality)
                .into_iter()
                .map(|m| m.to_uppercase())
                .collect(),
            sop_class: list(a.sop_class),
            body_part: list(a.body_part),
            study_description: text(a.study_description),
            station_name: text(a.station_name),
            time_of_day: text(a.time_of_day),
        },
        destinations: dests,
        priority: a.priority,
        deid,
        managed: false,
        created_ms: now_ms,
    };
    validate(&route).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(route)
}

/// The attributes of a DICOM file routes look at, read as the ingest reads them.
fn read_input(path: &Path) -> Result<RouteInput> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    RouteInput::read(std::io::BufReader::new(f), len)
        .with_context(|| format!("{} is not a readable DICOM file", path.display()))
}

/// `HH:MM` as minutes since midnight.
fn parse_minute(t: &str) -> Result<u32> {
    let bad = || anyhow::anyhow!("--at {t:?} is not HH:MM");
    let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h < 24 && m < 60 {
        Ok(h * 60 + m)
    } else {
        Err(bad())
    }
}

fn destinations(d: &[RouteDestination]) -> Vec<String> {
    d.iter().map(RouteDestination::text).collect()
}

/// The matcher in one line for tables.
fn describe(m: &RouteMatch, deid: Option<&str>) -> String {
    let mut parts = Vec::new();
    let mut push = |name: &str, v: &[String]| {
        if !v.is_empty() {
            parts.push(format!("{name}={}", v.join(",")));
        }
    };
    push("modality", &m.modality);
    push("body-part", &m.body_part);
    push("sop-class", &m.sop_class);
    push("calling-ae", &m.calling_ae);
    push("called-ae", &m.called_ae);
    push("source-org", &m.source_org);
    for (name, v) in [
        ("study-description", &m.study_description),
        ("station-name", &m.station_name),
        ("time-of-day", &m.time_of_day),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}={v:?}"));
        }
    }
    if let Some(d) = deid {
        parts.push(format!("deid={d}"));
    }
    if parts.is_empty() {
        "every instance".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RouteCommand,
    }

    fn add_args(args: &[&str]) -> AddArgs {
        let argv = ["x", "add"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().cmd {
            RouteCommand::Add(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_route_from_arguments() {
        let r = build_route(
            add_args(&[
                "ct-head",
                "--org",
                "spoke",
                "--to",
                "peer:hub,node:pacs",
                "--to",
                "peer:hub",
                "--modality",
                "ct,MR",
                "--body-part",
                "HEAD",
                "--study-description",
                "re:^stroke",
                "--time-of-day",
                "22:00-06:00",
                "--priority",
                "100",
                "--order",
                "-1",
                "--deid",
                "basic,retain-uids",
            ]),
            7,
        )
        .unwrap();
        assert_eq!(r.name, "ct-head");
        assert_eq!(
            r.destinations,
            vec![
                RouteDestination::Peer("hub".into()),
                RouteDestination::Node("pacs".into())
            ]
        );
        assert_eq!(r.matcher.modality, ["CT", "MR"]);
        assert_eq!(r.matcher.body_part, ["HEAD"]);
        assert_eq!(r.priority, 100);
        assert_eq!(r.order, -1);
        assert!(r.enabled);
        assert_eq!(r.created_ms, 7);
    }

    #[test]
    fn a_prefetch_match_keeps_its_commas() {
        let r = build_route(
            add_args(&[
                "ct-priors",
                "--org",
                "o",
                "--to",
                "prefetch:pacs?max=3&years=5&match=modality,body-part,peer:hub",
            ]),
            0,
        )
        .unwrap();
        let mut rule = vesalius_store::registry::Prefetch::new("pacs");
        rule.years = Some(5);
        rule.matching = vec![
            vesalius_store::registry::PriorMatch::Modality,
            vesalius_store::registry::PriorMatch::BodyPart,
        ];
        assert_eq!(
            r.destinations,
            vec![
                RouteDestination::Prefetch(rule),
                RouteDestination::Peer("hub".into())
            ]
        );
    }

    #[test]
    fn bad_routes_are_refused() {
        for bad in [
            &["r", "--org", "o", "--to", "hub"][..],
            &["r", "--org", "o", "--to", "peer:"],
            &["r", "--org", "o", "--to", "mail:x"],
            &[
                "r",
                "--org",
                "o",
                "--to",
                "prefetch:pacs?match=modality,colour",
            ],
            &[
                "r",
                "--org",
                "o",
                "--to",
                "peer:hub",
                "--time-of-day",
                "25:00-01:00",
            ],
            &[
                "r",
                "--org",
                "o",
                "--to",
                "peer:hub",
                "--station-name",
                "re:(",
            ],
            &[
                "r",
                "--org",
                "o",
                "--to",
                "peer:hub",
                "--deid",
                "basic,no-such-option",
            ],
        ] {
            assert!(build_route(add_args(bad), 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disabled_routes() {
        let r = build_route(
            add_args(&["r", "--org", "o", "--to", "analysis:x", "--disabled"]),
            0,
        )
        .unwrap();
        assert!(!r.enabled);
        assert_eq!(describe(&r.matcher, None), "every instance");
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_minute("00:00").unwrap(), 0);
        assert_eq!(parse_minute("13:37").unwrap(), 13 * 60 + 37);
        assert_eq!(parse_minute("23:59").unwrap(), 23 * 60 + 59);
        for bad in ["24:00", "1337", "", "12:60"] {
            assert!(parse_minute(bad).is_err(), "{bad:?}");
        }
    }
}
