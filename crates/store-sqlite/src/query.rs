//! Read queries: the [`Query`] model translated to SQL, with the same semantics as
//! [`vesalius_store::query::Matcher::matches`] (checked by the tests against the memory index).

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Executor, Row, Sqlite};
use vesalius_store::error::Result;
use vesalius_store::query::{
    Access, Answer, Computed, Key, Level, Matcher, Query, Scope, StudyOrder, answer,
};

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

/// One field of a packed answer row (see [`find`]): `-` for NULL, else `{bytes}:{text}`.
fn packed(expr: &str) -> String {
    format!(
        "CASE WHEN ({expr}) IS NULL THEN '-' ELSE length(CAST(({expr}) AS BLOB)) || ':' || ({expr}) END"
    )
}

/// The answer's own fields of a packed row: attrs, modalities, SOP classes, related studies,
/// series and instances.
const ANSWER_FIELDS: usize = 6;
/// The fields of a packed answer row, in order: the answer's, then its two order keys.
const PACKED_FIELDS: usize = ANSWER_FIELDS + 2;

/// One key of a query's order: the SQL expression, descending, and whether it is an integer
/// column (else text in SQLite's BINARY collation, i.e. byte order).
#[derive(Debug, Clone, Copy)]
struct OrderKey {
    expr: &'static str,
    desc: bool,
    integer: bool,
}

const fn key(expr: &'static str, desc: bool, integer: bool) -> OrderKey {
    OrderKey {
        expr,
        desc,
        integer,
    }
}

/// Compares two values of one order key as SQLite's `ORDER BY` does: NULL first, integers by
/// value (before any text, as in SQLite), text by bytes.
fn compare_key(k: &OrderKey, a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let o = match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if k.integer => match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        },
        (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
    };
    if k.desc { o.reverse() } else { o }
}

/// Puts unpacked answers in the query's order by the two keys each carries (its last fields).
fn sort_answers(rows: &mut [[Option<&str>; PACKED_FIELDS]], order: &[OrderKey; 2]) {
    rows.sort_by(|a, b| {
        compare_key(&order[0], a[ANSWER_FIELDS], b[ANSWER_FIELDS])
            .then_with(|| compare_key(&order[1], a[ANSWER_FIELDS + 1], b[ANSWER_FIELDS + 1]))
    });
}

/// Splits [`find`]'s packed answers: `PACKED_FIELDS` fields per row, each `-` (NULL) or
/// `{bytes}:{text}`.
fn unpack(packed: &str, rows: usize) -> Option<Vec<[Option<&str>; PACKED_FIELDS]>> {
    let mut out = Vec::with_capacity(rows);
    let mut rest = packed;
    while !rest.is_empty() {
        let mut row = [None; PACKED_FIELDS];
        for f in &mut row {
            if let Some(r) = rest.strip_prefix('-') {
                rest = r;
                continue;
            }
            let (len, r) = rest.split_once(':')?;
            let len: usize = len.parse().ok()?;
            *f = Some(r.get(..len)?);
            rest = &r[len..];
        }
        out.push(row);
    }
    (out.len() == rows).then_some(out)
}

/// Runs a query at its level.
///
/// The matching rows come back as **one** row: each answer's columns packed into a string
/// (lengths and text) and the answers concatenated in order by `group_concat(… ORDER BY …)`.
/// sqlx hands every result row from its connection thread to the async side on its own, a
/// thread wake-up per row; a 1000-study answer spent more time in those hand-offs than in
/// SQLite (docs/benchmarks.md, "QIDO on 1M instances").
pub(crate) async fn find(pool: &sqlx::SqlitePool, query: &Query) -> Result<Vec<Answer>> {
    // The answer's columns (attrs, modalities, SOP classes, related studies, series,
    // instances) and its order.
    let (fields, from, order): ([&str; ANSWER_FIELDS], &str, [OrderKey; 2]) = match query.level {
        Level::Patient => (
            [
                "(SELECT attrs FROM studies WHERE patient_pk = p.id ORDER BY id DESC LIMIT 1)",
                "NULL",
                "NULL",
                "(SELECT count(*) FROM studies WHERE patient_pk = p.id AND num_instances > 0)",
                "(SELECT coalesce(sum(num_series), 0) FROM studies WHERE patient_pk = p.id)",
                "(SELECT coalesce(sum(num_instances), 0) FROM studies WHERE patient_pk = p.id)",
            ],
            " FROM patients p WHERE EXISTS (SELECT 1 FROM studies WHERE patient_pk = p.id AND num_instances > 0)",
            [key("p.id", false, true), key("p.id", false, true)],
        ),
        Level::Study => (
            [
                "s.attrs",
                "s.modalities",
                "s.sop_classes",
                "NULL",
                "s.num_series",
                "s.num_instances",
            ],
            " FROM studies s JOIN patients p ON p.id = s.patient_pk WHERE s.num_instances > 0",
            match query.order {
                StudyOrder::DateDesc => [key("s.date", true, false), key("s.id", true, true)],
                StudyOrder::DateAsc => [key("s.date", false, false), key("s.id", false, true)],
                StudyOrder::PatientName => {
                    [key("p.name_norm", false, false), key("s.id", true, true)]
                }
            },
        ),
        Level::Series => (
            [
                "se.attrs",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "se.num_instances",
            ],
            " FROM series se JOIN studies s ON s.id = se.study_pk JOIN patients p ON p.id = s.patient_pk \
              WHERE se.num_instances > 0",
            [key("se.number", false, true), key("se.id", false, true)],
        ),
        Level::Image => (
            ["i.attrs", "NULL", "NULL", "NULL", "NULL", "NULL"],
            " FROM instances i JOIN series se ON se.id = i.series_pk JOIN studies s ON s.id = se.study_pk \
              JOIN patients p ON p.id = s.patient_pk WHERE i.status = 0",
            [key("i.number", false, true), key("i.id", false, true)],
        ),
    };
    // The inner query selects the columns once (`c0`…); the outer one packs them, so that a
    // column (a correlated subquery at patient level) is not evaluated once per use in `packed`.
    let columns: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(n, f)| format!("{f} AS c{n}"))
        .collect();
    let select = format!(
        "SELECT {}, {} AS c{ANSWER_FIELDS}, {} AS c{}",
        columns.join(", "),
        order[0].expr,
        order[1].expr,
        ANSWER_FIELDS + 1
    );
    let row: Vec<String> = (0..PACKED_FIELDS)
        .map(|n| packed(&format!("c{n}")))
        .collect();
    let mut q = Sql::new(&select);
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
    let direction = |desc: bool| if desc { " DESC" } else { "" };
    q.push(&format!(
        " ORDER BY {}{}, {}{}",
        order[0].expr,
        direction(order[0].desc),
        order[1].expr,
        direction(order[1].desc)
    ));
    // Written, not bound (see `crate::outbox::sql_limit`): a bound LIMIT re-prepares the
    // statement at every query.
    q.push(&format!(" LIMIT {}", query.limit as i64));
    q.push(" OFFSET ").bind_i64(query.offset as i64);
    // The inner query pages (its ORDER BY decides which rows are in). The concatenation has no
    // ORDER BY of its own: SQLite would build a temporary B-tree of every packed answer for it
    // (over 40 % of a 1000-study query's instructions, docs/benchmarks.md); each answer
    // carries its two order keys instead and is put in order here (`sort_answers`).
    q.text = format!(
        "SELECT group_concat({}, '') AS packed, count(*) AS n FROM ({})",
        row.join(" || "),
        q.text
    );
    let row = sqlx::query_with(AssertSqlSafe(q.text), q.args)
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    let n: i64 = row.try_get("n").map_err(db_err)?;
    let packed: String = row
        .try_get::<Option<String>, _>("packed")
        .map_err(db_err)?
        .unwrap_or_default();
    let mut rows = unpack(&packed, n as usize).ok_or_else(|| {
        vesalius_store::error::Error::Index("malformed packed query answer".into())
    })?;
    sort_answers(&mut rows, &order);
    let list = |s: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = s
            .unwrap_or_default()
            .split('\\')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    let int = |s: Option<&str>| s.and_then(|x| x.parse::<u64>().ok());
    Ok(rows
        .into_iter()
        .map(
            |[
                attrs,
                modalities,
                sop_classes,
                studies,
                series,
                instances,
                _,
                _,
            ]| {
                let computed = Computed {
                    modalities: list(modalities),
                    sop_classes: list(sop_classes),
                    studies: int(studies),
                    series: int(series),
                    instances: int(instances),
                };
                let mut a = answer(query.level, &[], &computed);
                a.merge_owned(attrs.unwrap_or_default().to_owned());
                a
            },
        )
        .collect())
}

#[cfg(test)]
mod packing_tests {
    use super::{PACKED_FIELDS, key, sort_answers, unpack};

    #[test]
    fn packed_answers_unpack_by_byte_length() {
        // Lengths are bytes (SQLite `length(CAST(x AS BLOB))`): multi-byte text, and text that
        // looks like the packing itself, come back whole.
        let a = r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Dö^J-1:2"}]}}"#;
        let packed = format!(
            "{}:{a}3:\\CT-2:12-3:340--{}:{a}--1:0-1:5--",
            a.len(),
            a.len()
        );
        let rows = unpack(&packed, 2).unwrap();
        assert_eq!(
            rows[0],
            [
                Some(a),
                Some("\\CT"),
                None,
                Some("12"),
                None,
                Some("340"),
                None,
                None
            ]
        );
        assert_eq!(
            rows[1],
            [Some(a), None, None, Some("0"), None, Some("5"), None, None]
        );
        assert_eq!(unpack("", 0).unwrap().len(), 0);
        // A wrong count, a cut field, a length beyond the text: refused, never misread.
        assert!(unpack(&packed, 3).is_none());
        assert!(unpack("5:ab", 1).is_none());
        assert!(unpack("x:ab-------", 1).is_none());
        assert!(
            unpack("1:ö-------", 1).is_none(),
            "a length inside a character"
        );
        assert_eq!(unpack("2:ö-------", 1).unwrap()[0][0], Some("ö"));
    }

    #[test]
    fn answers_are_ordered_like_sqlite_orders_their_keys() {
        fn row(
            k1: Option<&'static str>,
            k2: &'static str,
        ) -> [Option<&'static str>; PACKED_FIELDS] {
            [None, None, None, None, None, None, k1, Some(k2)]
        }
        // Newest first, then highest id: NULL dates last (they sort first ascending).
        let mut rows = vec![
            row(Some("20240101"), "1"),
            row(None, "9"),
            row(Some("20250101"), "2"),
            row(Some("20240101"), "10"),
        ];
        sort_answers(
            &mut rows,
            &[key("s.date", true, false), key("s.id", true, true)],
        );
        let ids: Vec<_> = rows.iter().map(|r| r[7].unwrap()).collect();
        assert_eq!(
            ids,
            ["2", "10", "1", "9"],
            "ids compare as integers, 10 > 1"
        );
        // Series numbers ascending: NULL first, integers by value, then ids.
        let mut rows = vec![
            row(Some("10"), "1"),
            row(Some("9"), "2"),
            row(None, "3"),
            row(Some("9"), "0"),
        ];
        sort_answers(
            &mut rows,
            &[key("se.number", false, true), key("se.id", false, true)],
        );
        let ids: Vec<_> = rows.iter().map(|r| r[7].unwrap()).collect();
        assert_eq!(ids, ["3", "0", "2", "1"]);
        // Names by bytes (BINARY collation): "Z" < "a" < "é".
        let mut rows = vec![
            row(Some("é"), "1"),
            row(Some("a"), "2"),
            row(Some("Z"), "3"),
        ];
        sort_answers(
            &mut rows,
            &[key("p.name_norm", false, false), key("s.id", true, true)],
        );
        let ids: Vec<_> = rows.iter().map(|r| r[7].unwrap()).collect();
        assert_eq!(ids, ["3", "2", "1"]);
    }
}
