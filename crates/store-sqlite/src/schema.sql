-- Vesalius index schema, version 7 (PRAGMA user_version; see schema.rs for the migrations).
-- Applied at every open: every statement is CREATE ... IF NOT EXISTS.
-- One row per patient, study, series and instance version.
CREATE TABLE IF NOT EXISTS patients (
    id          INTEGER PRIMARY KEY,
    org         TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    patient_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- Upper-cased name: case-insensitive matching with an index-friendly GLOB prefix.
    name_norm   TEXT NOT NULL,
    birth_date  TEXT NOT NULL,
    sex         TEXT NOT NULL,
    UNIQUE (org, issuer, patient_id)
);
CREATE INDEX IF NOT EXISTS patients_name ON patients (name_norm);
CREATE INDEX IF NOT EXISTS patients_pid ON patients (patient_id);

CREATE TABLE IF NOT EXISTS studies (
    id            INTEGER PRIMARY KEY,
    org           TEXT NOT NULL,
    study_uid     TEXT NOT NULL,
    patient_pk    INTEGER NOT NULL REFERENCES patients (id),
    date          TEXT NOT NULL,
    time          TEXT NOT NULL,
    accession     TEXT NOT NULL,
    referring     TEXT NOT NULL,
    referring_norm TEXT NOT NULL,
    description   TEXT NOT NULL,
    study_id      TEXT NOT NULL,
    -- Modalities of current series as '\CT\MR\' so a LIKE '%\CT\%' finds one.
    modalities    TEXT NOT NULL DEFAULT '\',
    sop_classes   TEXT NOT NULL DEFAULT '\',
    num_series    INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs         TEXT NOT NULL,
    updated_ms    INTEGER NOT NULL,
    UNIQUE (org, study_uid)
);
CREATE INDEX IF NOT EXISTS studies_uid ON studies (study_uid);
CREATE INDEX IF NOT EXISTS studies_date ON studies (date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies (accession);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_pk);

CREATE TABLE IF NOT EXISTS series (
    id            INTEGER PRIMARY KEY,
    study_pk      INTEGER NOT NULL REFERENCES studies (id),
    series_uid    TEXT NOT NULL,
    modality      TEXT NOT NULL,
    number        INTEGER,
    description   TEXT NOT NULL,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs         TEXT NOT NULL,
    UNIQUE (study_pk, series_uid)
);
CREATE INDEX IF NOT EXISTS series_uid ON series (series_uid);

-- status: 0 current, 1 prior version, 2 rejected (IOCM).
CREATE TABLE IF NOT EXISTS instances (
    id            INTEGER PRIMARY KEY,
    series_pk     INTEGER NOT NULL REFERENCES series (id),
    org           TEXT NOT NULL,
    sop_uid       TEXT NOT NULL,
    sop_class     TEXT NOT NULL,
    number        INTEGER,
    ts            TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,
    superseded_ms INTEGER NOT NULL DEFAULT 0,
    received_ms   INTEGER NOT NULL,
    source        TEXT NOT NULL,
    attrs         TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    frames        TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS instances_current ON instances (org, sop_uid) WHERE status = 0;
CREATE INDEX IF NOT EXISTS instances_sop ON instances (sop_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_pk, status, number);

-- ---- Outbox (vesalius_store::outbox): the durable job queue, and receipts of deliveries. ----
-- A job is committed with the instance that caused it (ingest) or by Outbox::enqueue, changed
-- only by the writer task, and deleted when its worker completes it.
-- AUTOINCREMENT: ids are never reused (plain rowids would hand a completed job's id to the next
-- job), so an id in a log line, an API answer or a stale worker's hand names one job forever.
CREATE TABLE IF NOT EXISTS outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    queue          TEXT NOT NULL,
    -- '' when the job belongs to no study; transfers are summarised per (queue, study_uid).
    study_uid      TEXT NOT NULL DEFAULT '',
    payload        TEXT NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    not_before_ms  INTEGER NOT NULL DEFAULT 0,
    dedupe_key     TEXT,
    -- 'ready' | 'leased' | 'parked' (JobState::as_str): readable in the sqlite3 shell.
    state          TEXT NOT NULL DEFAULT 'ready',
    attempts       INTEGER NOT NULL DEFAULT 0,
    lease_owner    TEXT NOT NULL DEFAULT '',
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT NOT NULL DEFAULT '',
    created_ms     INTEGER NOT NULL
);
-- Outbox::lease walks one queue's ready (then expired leased) jobs in hand-out order and stops
-- after `max`: (queue, state, priority DESC, id) is that order.
CREATE INDEX IF NOT EXISTS outbox_lease ON outbox (queue, state, priority DESC, id);
-- At most one job per (queue, dedupe_key) in the outbox; also the lookup of enqueue's dedupe.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_dedupe ON outbox (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
-- Outbox::release finds one worker's leases without scanning every queue.
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox (lease_owner) WHERE state = 'leased';
-- Jobs of one study (the API's transfer view, Outbox::jobs with a study filter).
CREATE INDEX IF NOT EXISTS outbox_study ON outbox (study_uid);

-- Proof of deliveries, kept after their jobs are gone; append-only for the product.
-- kind: 'instance' | 'study' (ReceiptKind). "Newest first" is id order (insertion).
-- org: the sending organisation (the job's payload `org`; schema 6). Its indexes are made by
-- schema.rs after the column exists (a version-5 table gains it there).
CREATE TABLE IF NOT EXISTS receipts (
    id           INTEGER PRIMARY KEY,
    org          TEXT NOT NULL DEFAULT '',
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    study_uid    TEXT NOT NULL,
    sop_uid      TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    delivered_ms INTEGER NOT NULL,
    verified     INTEGER NOT NULL,
    detail       TEXT NOT NULL
);
-- One transfer's receipts (queue, study), newest first through the implicit trailing rowid.
CREATE INDEX IF NOT EXISTS receipts_transfer ON receipts (queue, study_uid);
CREATE INDEX IF NOT EXISTS receipts_study ON receipts (study_uid);

-- ---- Registry (vesalius_store::registry): peers, DICOM nodes, routes, arrivals. ----
-- Written only by the writer task (Registry::apply, with its audit events in one savepoint).
-- Lists of values and the route matcher are JSON text (serde) read whole with their row.

-- kind: 'vesalius' or 'dicomweb' (schema 4); auth_type 'none' | 'basic' | 'bearer' with
-- auth_user (basic) and auth_secret (password or token): credentials this site presents to a
-- plain DICOMweb peer, so they are kept as given (never shown by the API or the CLI).
CREATE TABLE IF NOT EXISTS peers (
    name        TEXT PRIMARY KEY,
    base_url    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    org         TEXT NOT NULL,
    remote_org  TEXT,
    may_query   INTEGER NOT NULL,
    description TEXT NOT NULL,
    managed     INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'vesalius',
    auth_type   TEXT NOT NULL DEFAULT 'none',
    auth_user   TEXT NOT NULL DEFAULT '',
    auth_secret TEXT NOT NULL DEFAULT ''
);

-- retrieve: 'move' or 'get' (schema 5), how studies are retrieved from the node.
CREATE TABLE IF NOT EXISTS dicom_nodes (
    name              TEXT PRIMARY KEY,
    ae_title          TEXT NOT NULL,
    host              TEXT NOT NULL,
    port              INTEGER NOT NULL,
    -- JSON array of transfer syntax UIDs.
    transfer_syntaxes TEXT NOT NULL,
    org               TEXT NOT NULL,
    description       TEXT NOT NULL,
    managed           INTEGER NOT NULL,
    created_ms        INTEGER NOT NULL,
    retrieve          TEXT NOT NULL DEFAULT 'move',
    -- Query/Retrieve Information Model: 'study' (Study Root) or 'patient' (Patient Root).
    query_model       TEXT NOT NULL DEFAULT 'study'
);

-- sort_order is Route::order (ORDER is an SQL keyword); routes are read whole, in
-- (sort_order, id) order, by every ingest's routing (the table is small).
CREATE TABLE IF NOT EXISTS routes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    org          TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    sort_order   INTEGER NOT NULL,
    -- JSON of RouteMatch.
    matcher      TEXT NOT NULL,
    -- JSON array of RouteDestination.
    destinations TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    deid         TEXT,
    managed      INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL
);

-- Studies delivered here by peers; listed most recently updated first, per org or overall.
CREATE TABLE IF NOT EXISTS arrivals (
    org                TEXT NOT NULL,
    study_uid          TEXT NOT NULL,
    from_peer          TEXT NOT NULL,
    priority           INTEGER NOT NULL,
    manifest_instances INTEGER NOT NULL,
    complete_ms        INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    PRIMARY KEY (org, study_uid)
);
CREATE INDEX IF NOT EXISTS arrivals_updated ON arrivals (updated_ms DESC, org, study_uid);
CREATE INDEX IF NOT EXISTS arrivals_org ON arrivals (org, updated_ms DESC, study_uid);

-- ---- Directory (issue 4): organisations, users, credentials, grants, AE titles, links. ----
-- Written only by the writer task (Directory::apply), each apply with its audit records in one
-- savepoint. Secrets are stored as SHA-256 hex or argon2id PHC strings, never in clear.
-- Records refer to each other by id without foreign keys (vesalius_store::directory).

CREATE TABLE IF NOT EXISTS orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    email         TEXT NOT NULL,
    -- JSON array of {"org", "role"}: always read whole with its user.
    memberships   TEXT NOT NULL,
    password_hash TEXT,
    oidc_issuer   TEXT,
    oidc_subject  TEXT,
    service       INTEGER NOT NULL,
    disabled      INTEGER NOT NULL,
    must_change_password INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    -- Version 7: a site administrator (may create organisations, issue 6).
    site_admin    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users (oidc_issuer, oidc_subject)
    WHERE oidc_issuer IS NOT NULL;

CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    org         TEXT NOT NULL,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    revoked     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS api_tokens_org ON api_tokens (org);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_id);

CREATE TABLE IF NOT EXISTS sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    org         TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);

-- grantee_kind 'org' | 'user'; subject_kind 'study' (study_uid) | 'patient' (issuer, patient_id).
CREATE TABLE IF NOT EXISTS grants (
    id             TEXT PRIMARY KEY,
    owner_org      TEXT NOT NULL,
    grantee_kind   TEXT NOT NULL,
    grantee_id     TEXT NOT NULL,
    subject_kind   TEXT NOT NULL,
    study_uid      TEXT,
    patient_issuer TEXT,
    patient_id     TEXT,
    expires_ms     INTEGER,
    break_glass    INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    revoked        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_grantee ON grants (grantee_kind, grantee_id);
CREATE INDEX IF NOT EXISTS grants_owner ON grants (owner_org);

CREATE TABLE IF NOT EXISTS ae_titles (
    ae_title      TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    -- JSON array of IPs / CIDR blocks; empty means any.
    allowed_addrs TEXT NOT NULL,
    listen_host   TEXT,
    listen_port   INTEGER,
    description   TEXT NOT NULL,
    may_query     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS share_links (
    id               TEXT PRIMARY KEY,
    secret_hash      TEXT NOT NULL,
    org              TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    allow_download   INTEGER NOT NULL,
    passcode_hash    TEXT,
    birth_date_check TEXT,
    created_by       TEXT NOT NULL,
    created_ms       INTEGER NOT NULL,
    expires_ms       INTEGER NOT NULL,
    revoked          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS share_links_org ON share_links (org);

CREATE TABLE IF NOT EXISTS upload_links (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    org         TEXT NOT NULL,
    label       TEXT NOT NULL,
    max_bytes   INTEGER NOT NULL,
    used_bytes  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upload_links_org ON upload_links (org);

-- One row, rewritten by Index::sync with synchronous=FULL: its WAL fsync makes the ingest
-- journal's unsynced commits durable (lib.rs). Added without a version bump: older builds of
-- schema 7 never read it and open the file as before.
CREATE TABLE IF NOT EXISTS sync_marks (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Login/link throttling (vesalius_store::directory::ThrottleRecord). expires_ms: from then on
-- the row says nothing; the writer deletes such rows whenever it counts a failure.
CREATE TABLE IF NOT EXISTS throttle (
    key             TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_ms       INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL,
    expires_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS throttle_expiry ON throttle (expires_ms);

-- ---- Audit trail: append-only, hash-chained (vesalius_store::audit). ----
-- hash = sha256(seq "\n" prev_hash "\n" event), event = the canonical JSON of the AuditEvent;
-- the other columns copy fields of `event` for searching. Version 1's placeholder
-- `audit(id, action, details, created_ms)` is dropped or renamed by the migration (schema.rs).
CREATE TABLE IF NOT EXISTS audit (
    seq            INTEGER PRIMARY KEY,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    time_ms        INTEGER NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_org      TEXT NOT NULL,
    org            TEXT NOT NULL,
    patient_issuer TEXT,
    patient_id     TEXT,
    study_uid      TEXT,
    event          TEXT NOT NULL
);
-- Searches are newest first within one key: (key, seq) serves both the filter and the order.
CREATE INDEX IF NOT EXISTS audit_org ON audit (org, seq);
CREATE INDEX IF NOT EXISTS audit_study ON audit (study_uid, seq) WHERE study_uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_patient ON audit (patient_id, patient_issuer, seq)
    WHERE patient_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor_id, seq);
CREATE INDEX IF NOT EXISTS audit_actor_org ON audit (actor_org, seq);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_ms);

-- The database itself refuses what would break the chain: a record that is not the next seq
-- or does not link to its predecessor, and any update or delete. (This guards against bugs and
-- a second writer; against someone editing the file, the hashes and signed checkpoints do.)
CREATE TRIGGER IF NOT EXISTS audit_linear BEFORE INSERT ON audit
WHEN NEW.seq <> coalesce((SELECT max(seq) FROM audit), 0) + 1
  OR NEW.prev_hash <> coalesce((SELECT hash FROM audit WHERE seq = NEW.seq - 1),
        '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'audit records are appended in order, each linked to the last');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

-- Signed checkpoints of the chain (several may cover one seq), ordered by (seq, id).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    time_ms    INTEGER NOT NULL,
    alg        TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoints_seq ON audit_checkpoints (seq, id);

-- Alerts (issue 6, docs/alerts.md): rules, users' subscriptions, the alerts raised (one row per
-- recipient; `chain` groups a raise and its escalations) and the durable queue of their webhook
-- and e-mail deliveries. `alert_keys` makes a raise idempotent per key (two nodes hearing one
-- event, a condition seen again). Lists, JSON text: `escalation` (usernames), `details`.
CREATE TABLE IF NOT EXISTS alert_rules (
    id                 TEXT PRIMARY KEY,
    org                TEXT NOT NULL,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    threshold          INTEGER NOT NULL,
    escalation         TEXT NOT NULL,
    escalate_after_ms  INTEGER NOT NULL,
    enabled            INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_subscriptions (
    id               TEXT PRIMARY KEY,
    rule_id          TEXT NOT NULL,
    org              TEXT NOT NULL,
    username         TEXT NOT NULL,
    channel          TEXT NOT NULL,
    target           TEXT NOT NULL,
    secret           TEXT NOT NULL,
    escalation_only  INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_keys (
    key         TEXT PRIMARY KEY,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id               TEXT PRIMARY KEY,
    chain            TEXT NOT NULL,
    org              TEXT NOT NULL,
    rule_id          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    username         TEXT NOT NULL,
    title            TEXT NOT NULL,
    study_uid        TEXT,
    link             TEXT,
    details          TEXT NOT NULL,
    created_ms       INTEGER NOT NULL,
    step             INTEGER NOT NULL,
    escalate_at_ms   INTEGER,
    acknowledged_ms  INTEGER,
    acknowledged_by  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_user ON alerts (username, created_ms);
CREATE INDEX IF NOT EXISTS alerts_chain ON alerts (chain);
CREATE INDEX IF NOT EXISTS alerts_escalate ON alerts (escalate_at_ms)
    WHERE escalate_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id          TEXT PRIMARY KEY,
    alert_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    target      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    next_ms     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    last_error  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_ms)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON alert_deliveries (alert_id);
