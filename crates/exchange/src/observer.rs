//! [`RouteObserver`]: evaluates the routes for every ingested instance **inside the ingest
//! transaction** (DESIGN.md), so a routed instance always has its outbox job: the job is a
//! [`SideRecord::Outbox`] the index commits with the instance. A `prefetch:NODE` destination
//! makes a prefetch job for the instance's study instead (deduplicated per study,
//! [`crate::priors`]).
//!
//! Observers do no I/O, so the observer keeps the compiled routes in memory and
//! [`RouteObserver::refresh`] reloads them from the [`Registry`]: after every change made through
//! this node (API, admin) and every few seconds (changes made by another node or by `vesalius
//! admin` on the database), so a route change reaches every node within that interval.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vesalius_store::Registry;
use vesalius_store::ingest::{IngestContext, IngestObserver};
use vesalius_store::model::{InstanceRecord, SideRecord};

use vesalius_store::registry::RouteDestination;

use crate::job::TransferJob;
use crate::now_ms;
use crate::priors::PrefetchJob;
use crate::route::{RouteInput, RouteSet, minute_of_day};

/// The routing observer.
pub struct RouteObserver {
    registry: Arc<dyn Registry>,
    routes: RwLock<Arc<RouteSet>>,
    utc_offset_minutes: i32,
    prefetch_delay_ms: i64,
}

impl RouteObserver {
    /// An observer over `registry` (call [`refresh`](Self::refresh) before the first ingest).
    pub fn new(registry: Arc<dyn Registry>, utc_offset_minutes: i32) -> Self {
        RouteObserver {
            registry,
            routes: RwLock::new(Arc::new(RouteSet::default())),
            utc_offset_minutes,
            prefetch_delay_ms: crate::priors::DEFAULT_PREFETCH_DELAY.as_millis() as i64,
        }
    }

    /// Sets how long a prefetch job waits after its study's first instance arrived (one job
    /// then serves the whole study).
    pub fn with_prefetch_delay(mut self, delay: Duration) -> Self {
        self.prefetch_delay_ms = delay.as_millis() as i64;
        self
    }

    /// Reloads and recompiles the routes; routes that do not compile are logged and skipped.
    pub async fn refresh(&self) -> vesalius_store::Result<()> {
        let routes = self.registry.routes().await?;
        let (set, errors) = RouteSet::new(&routes);
        for e in errors {
            tracing::warn!("route skipped: {e}");
        }
        *self.routes.write().expect("lock") = Arc::new(set);
        Ok(())
    }

    /// Refreshes every `interval` until `shutdown`.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                if let Err(e) = me.refresh().await {
                    tracing::warn!("reloading routes: {e}");
                }
            }
        });
    }

    /// The site's offset from UTC, minutes (time-of-day windows of routes are in site time).
    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<RouteSet> {
        self.routes.read().expect("lock").clone()
    }
}

impl IngestObserver for RouteObserver {
    fn observe(&self, record: &InstanceRecord, ctx: &IngestContext) -> Vec<SideRecord> {
        let routes = self.routes();
        if routes.is_empty() {
            return Vec::new();
        }
        let input = RouteInput::of(record, ctx);
        let now = now_ms();
        let minute = minute_of_day(now, self.utc_offset_minutes);
        let mut out = Vec::new();
        for fired in routes.evaluate(&input, minute) {
            let job = TransferJob::of(record, &fired.route_id, fired.deid.clone());
            for dest in &fired.destinations {
                match dest {
                    // Not a transfer of the instance: one prefetch per study (dedupe key).
                    RouteDestination::Prefetch(rule) => {
                        if let Some(p) = PrefetchJob::of(record, rule, &fired.route_id) {
                            let at = now + self.prefetch_delay_ms;
                            out.push(SideRecord::Outbox(p.to_job(fired.priority, at)));
                        }
                    }
                    _ => out.push(SideRecord::Outbox(job.to_job(dest, fired.priority))),
                }
            }
        }
        out
    }
}
