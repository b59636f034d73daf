-- Projects, keys, signing keys, quota gauges, usage and audit.
-- Times are milliseconds since the Unix epoch; lists and quota sets are JSON text.
-- Ids and days use the "C" collation: listings page by comparing ids, which must order as
-- bytes (as on SQLite), whatever locale the cluster was created with.

CREATE TABLE projects (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    quotas      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT COLLATE "C" PRIMARY KEY,
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL UNIQUE,
    secret_prefix   TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    resources       TEXT NOT NULL,
    rate_per_second BIGINT,
    rate_burst      BIGINT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    rotated_at      BIGINT
);

CREATE INDEX api_keys_by_project ON api_keys (project_id, id);

CREATE TABLE signing_keys (
    kid          TEXT COLLATE "C" PRIMARY KEY,
    public_key   TEXT NOT NULL,
    private_key  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);

CREATE TABLE quota_gauges (
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    metric      TEXT NOT NULL,
    used        BIGINT NOT NULL,
    PRIMARY KEY (project_id, metric)
);

-- Kept after a project is deleted: operators bill from it.
CREATE TABLE usage_daily (
    project_id  TEXT NOT NULL,
    day         TEXT COLLATE "C" NOT NULL,
    metric      TEXT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (project_id, day, metric)
);

CREATE TABLE audit_log (
    id          TEXT COLLATE "C" PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    project_id  TEXT COLLATE "C",
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    details     TEXT NOT NULL
);

CREATE INDEX audit_log_by_project ON audit_log (project_id, id);
