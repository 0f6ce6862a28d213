-- The index schema as issue 1 left it (unversioned, user_version 0), kept for the migration test.
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

-- Durable work committed with the instance that caused it (routing, analysis).
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);

-- Audit events committed with the change they record (hash chain added with auth).
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    action      TEXT NOT NULL,
    details     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
