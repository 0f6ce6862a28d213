//! Read queries: the [`Query`] model translated to SQL, with the same semantics as
//! [`vesalius_store::query::Matcher::matches`] (checked by the tests against the memory index).

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Executor, Row, Sqlite};
use vesalius_store::error::Result;
use vesalius_store::query::{Access, Answer, Computed, Key, Level, Matcher, Query, Scope, answer};

use crate::db_err;
use crate::write::pad_time;

/// Instance status filter: current only.
pub(crate) const CURRENT: &str = "i.status = 0";
/// Prior versions only.
pub(crate) const PRIOR: &str = "i.status = 1";
/// Any status.
pub(crate) const ANY: &str = "1 = 1";

/// SQL and its arguments, built together so placeholders and binds never drift apart.
struct Sql {
    text: String,
    args: SqliteArguments,
}

impl Sql {
    fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: SqliteArguments::default(),
        }
    }
    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    fn bind(&mut self, v: impl Into<String>) -> &mut Self {
        self.text.push('?');
        let _ = self.args.add(v.into());
        self
    }
    fn bind_i64(&mut self, v: i64) -> &mut Self {
        self.text.push('?');
        let _ = self.args.add(v);
        self
    }
}

fn scope_sql(scope: &Scope, status: &str, extra: &str) -> Sql {
    let mut q = Sql::new(&format!(
        "SELECT i.org, s.study_uid, se.series_uid, i.sop_class, i.sop_uid, i.ts, i.blob_key, \
         i.size, i.sha256, i.number{extra} FROM instances i \
         JOIN series se ON se.id = i.series_pk JOIN studies s ON s.id = se.study_pk WHERE {status}"
    ));
    if let Some(u) = &scope.instance {
        q.push(" AND i.sop_uid = ").bind(u);
    }
    if let Some(u) = &scope.series {
        q.push(" AND se.series_uid = ").bind(u);
    }
    if let Some(u) = &scope.study {
        q.push(" AND s.study_uid = ").bind(u);
    }
    if let Some(access) = &scope.access {
        let patient =
            "(SELECT gp.org, gp.issuer, gp.patient_id FROM patients gp WHERE gp.id = s.patient_pk)";
        access_filter(&mut q, access, "i.org", Some("s"), patient);
    }
    q.push(" ORDER BY s.id, se.number, se.id, i.number, i.id");
    q
}

/// Restricts a query to what `access` lets its principal see (issue 4: the filter lives inside
/// the SQL so that LIMIT/OFFSET paging stays correct). `org_col` is the owning-org column of the
/// driving table; `study` names the studies alias when the query has one (`None` at patient
/// level, where study grants become an EXISTS); `patient` is a row value `(org, issuer, id)` of
/// the patient concerned.
fn access_filter(q: &mut Sql, access: &Access, org_col: &str, study: Option<&str>, patient: &str) {
    if access.is_empty() {
        q.push(" AND 0");
        return;
    }
    q.push(" AND (0");
    if !access.orgs.is_empty() {
        q.push(&format!(" OR {org_col} IN ("));
        for (n, o) in access.orgs.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.bind(o.clone());
        }
        q.push(")");
    }
    for (org, uid) in &access.studies {
        match study {
            Some(s) => {
                q.push(&format!(" OR ({s}.org = ")).bind(org.clone());
                q.push(&format!(" AND {s}.study_uid = ")).bind(uid.clone());
                q.push(")");
            }
            None => {
                q.push(
                    " OR EXISTS (SELECT 1 FROM studies gs WHERE gs.patient_pk = p.id AND gs.org = ",
                )
                .bind(org.clone());
                q.push(" AND gs.study_uid = ").bind(uid.clone());
                q.push(")");
            }
        }
    }
    for (org, issuer, pid) in &access.patients {
        q.push(&format!(" OR {patient} = (")).bind(org.clone());
        q.push(", ").bind(issuer.clone());
        q.push(", ").bind(pid.clone());
        q.push(")");
    }
    q.push(")");
}

/// Rows of instances in scope (columns of `stored_from_row` plus `extra`).
pub(crate) async fn scoped<'e, E>(
    ex: E,
    scope: &Scope,
    extra: &str,
    status: &str,
) -> Result<Vec<SqliteRow>>
where
    E: Executor<'e, Database = Sqlite>,
{
    let q = scope_sql(scope, status, extra);
    sqlx::query_with(AssertSqlSafe(q.text), q.args)
        .fetch_all(ex)
        .await
        .map_err(db_err)
}

/// [`scoped`] on the writer's connection.
pub(crate) async fn scoped_on(
    conn: &mut sqlx::SqliteConnection,
    scope: &Scope,
    extra: &str,
    status: &str,
) -> Result<Vec<SqliteRow>> {
    scoped(conn, scope, extra, status).await
}

/// The SQL column of a key, and whether it holds an upper-cased person name.
fn column(key: Key) -> (&'static str, bool) {
    match key {
        Key::PatientName => ("p.name_norm", true),
        Key::PatientId => ("p.patient_id", false),
        Key::IssuerOfPatientId => ("p.issuer", false),
        Key::PatientBirthDate => ("p.birth_date", false),
        Key::PatientSex => ("p.sex", false),
        Key::StudyInstanceUid => ("s.study_uid", false),
        Key::StudyDate => ("s.date", false),
        Key::StudyTime => ("s.time", false),
        Key::AccessionNumber => ("s.accession", false),
        Key::ReferringPhysicianName => ("s.referring_norm", true),
        Key::StudyDescription => ("s.description", false),
        Key::StudyId => ("s.study_id", false),
        Key::ModalitiesInStudy => ("s.modalities", false),
        Key::SeriesInstanceUid => ("se.series_uid", false),
        Key::Modality => ("se.modality", false),
        Key::SeriesNumber => ("se.number", false),
        Key::SeriesDescription => ("se.description", false),
        Key::SopInstanceUid => ("i.sop_uid", false),
        Key::SopClassUid => ("i.sop_class", false),
        Key::InstanceNumber => ("i.number", false),
    }
}

/// DICOM wildcards to a GLOB pattern: `*` and `?` keep their meaning, `[` is escaped.
fn glob(p: &str) -> String {
    p.replace('[', "[[]")
}

fn push_condition(q: &mut Sql, key: Key, m: &Matcher, fuzzy: bool) {
    let (col, pn) = column(key);
    let norm = |s: &str| if pn { s.to_uppercase() } else { s.to_owned() };
    if key == Key::ModalitiesInStudy {
        let list: Vec<String> = match m {
            Matcher::List(l) => l.clone(),
            Matcher::Single(s) | Matcher::Wildcard(s) => vec![s.clone()],
            Matcher::Range { .. } => vec![],
        };
        q.push("(");
        for (n, v) in list.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            q.push(&format!("{col} GLOB "))
                .bind(format!("*\\{}\\*", glob(v)));
        }
        if list.is_empty() {
            q.push("1 = 1");
        }
        q.push(")");
        return;
    }
    let numeric = matches!(key, Key::SeriesNumber | Key::InstanceNumber);
    match m {
        Matcher::Single(s) if numeric => {
            q.push(&format!("{col} = "))
                .bind_i64(s.trim().parse().unwrap_or(i64::MIN));
        }
        Matcher::Single(s) if pn => {
            let s = norm(s);
            q.push(&format!("({col} = ")).bind(s.clone());
            if !s.contains('=') {
                // The alphabetic group alone matches names that also have other groups.
                q.push(&format!(" OR {col} GLOB "))
                    .bind(format!("{}=*", glob(&s)));
            }
            if fuzzy {
                push_fuzzy(q, col, &s);
            }
            q.push(")");
        }
        Matcher::Single(s) => {
            q.push(&format!("{col} = ")).bind(s.clone());
        }
        Matcher::Wildcard(p) => {
            q.push(&format!("({col} GLOB ")).bind(glob(&norm(p)));
            if fuzzy && pn {
                push_fuzzy(q, col, norm(p).trim_end_matches('*'));
            }
            q.push(")");
        }
        Matcher::Range { from, to } => {
            let time = key == Key::StudyTime;
            q.push(&format!("({col} <> ''"));
            if let Some(f) = from {
                let f = if time { pad_time(f) } else { f.clone() };
                q.push(&format!(" AND {col} >= ")).bind(f);
            }
            if let Some(t) = to {
                let t = if time {
                    let mut t = t.clone();
                    while t.len() < 6 {
                        t.push('9');
                    }
                    if !t.contains('.') {
                        t.push_str(".999999");
                    }
                    t
                } else {
                    t.clone()
                };
                q.push(&format!(" AND {col} <= ")).bind(t);
            }
            q.push(")");
        }
        Matcher::List(l) => {
            q.push(&format!("{col} IN ("));
            for (n, v) in l.iter().enumerate() {
                if n > 0 {
                    q.push(", ");
                }
                q.bind(v.clone());
            }
            q.push(")");
        }
    }
}

/// Fuzzy person-name matching: every query word starts some name component.
fn push_fuzzy(q: &mut Sql, col: &str, query: &str) {
    let words: Vec<&str> = query.split(['^', ' ']).filter(|s| !s.is_empty()).collect();
    if words.is_empty() {
        return;
    }
    q.push(" OR (");
    for (n, w) in words.iter().enumerate() {
        if n > 0 {
            q.push(" AND ");
        }
        q.push(&format!(
            "(' ' || replace(replace({col}, '^', ' '), '=', ' ')) GLOB "
        ))
        .bind(format!("* {}*", glob(w)));
    }
    q.push(")");
}

/// Runs a query at its level.
pub(crate) async fn find(pool: &sqlx::SqlitePool, query: &Query) -> Result<Vec<Answer>> {
    let (select, from) = match query.level {
        Level::Patient => (
            "SELECT (SELECT attrs FROM studies WHERE patient_pk = p.id ORDER BY id DESC LIMIT 1) AS attrs, \
               (SELECT count(*) FROM studies WHERE patient_pk = p.id AND num_instances > 0) AS n_studies, \
               (SELECT coalesce(sum(num_series), 0) FROM studies WHERE patient_pk = p.id) AS n_series, \
               (SELECT coalesce(sum(num_instances), 0) FROM studies WHERE patient_pk = p.id) AS n_instances",
            " FROM patients p WHERE EXISTS (SELECT 1 FROM studies WHERE patient_pk = p.id AND num_instances > 0)",
        ),
        Level::Study => (
            "SELECT s.attrs, s.modalities, s.sop_classes, s.num_series AS n_series, s.num_instances AS n_instances",
            " FROM studies s JOIN patients p ON p.id = s.patient_pk WHERE s.num_instances > 0",
        ),
        Level::Series => (
            "SELECT se.attrs, se.num_instances AS n_instances",
            " FROM series se JOIN studies s ON s.id = se.study_pk JOIN patients p ON p.id = s.patient_pk \
              WHERE se.num_instances > 0",
        ),
        Level::Image => (
            "SELECT i.attrs",
            " FROM instances i JOIN series se ON se.id = i.series_pk JOIN studies s ON s.id = se.study_pk \
              JOIN patients p ON p.id = s.patient_pk WHERE i.status = 0",
        ),
    };
    let mut q = Sql::new(select);
    q.push(from);
    if let Some(access) = &query.access {
        let study = (query.level != Level::Patient).then_some("s");
        access_filter(
            &mut q,
            access,
            "p.org",
            study,
            "(p.org, p.issuer, p.patient_id)",
        );
    }
    for (key, m) in &query.filters {
        q.push(" AND ");
        // A key of a lower level than the query's: some current record below must match.
        let exists = match (query.level, key.level()) {
            (l, k) if k <= l => None,
            (Level::Patient, Level::Study) => {
                Some("studies s WHERE s.patient_pk = p.id AND s.num_instances > 0")
            }
            (Level::Patient, _) => Some(
                "studies s JOIN series se ON se.study_pk = s.id JOIN instances i ON i.series_pk = se.id \
                 WHERE s.patient_pk = p.id AND i.status = 0",
            ),
            (Level::Study, _) => Some(
                "series se JOIN instances i ON i.series_pk = se.id WHERE se.study_pk = s.id AND i.status = 0",
            ),
            _ => Some("instances i WHERE i.series_pk = se.id AND i.status = 0"),
        };
        match exists {
            Some(sub) => {
                q.push(&format!("EXISTS (SELECT 1 FROM {sub} AND "));
                push_condition(&mut q, *key, m, query.fuzzy);
                q.push(")");
            }
            None => push_condition(&mut q, *key, m, query.fuzzy),
        }
    }
    match query.level {
        Level::Study => q.push(" ORDER BY s.date DESC, s.id DESC"),
        Level::Series => q.push(" ORDER BY se.number, se.id"),
        Level::Image => q.push(" ORDER BY i.number, i.id"),
        Level::Patient => q.push(" ORDER BY p.id"),
    };
    q.push(" LIMIT ").bind_i64(query.limit as i64);
    q.push(" OFFSET ").bind_i64(query.offset as i64);
    let rows = sqlx::query_with(AssertSqlSafe(q.text), q.args)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    let list = |s: Option<String>| -> Vec<String> {
        let mut v: Vec<String> = s
            .unwrap_or_default()
            .split('\\')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    Ok(rows
        .iter()
        .map(|r| {
            let attrs: String = r.try_get("attrs").unwrap_or_default();
            let computed = Computed {
                modalities: list(r.try_get("modalities").ok()),
                sop_classes: list(r.try_get("sop_classes").ok()),
                studies: r.try_get::<i64, _>("n_studies").ok().map(|n| n as u64),
                series: r.try_get::<i64, _>("n_series").ok().map(|n| n as u64),
                instances: r.try_get::<i64, _>("n_instances").ok().map(|n| n as u64),
            };
            let mut a = answer(query.level, &[], &computed);
            a.merge_owned(attrs);
            a
        })
        .collect())
}
