-- Search indexes: the schema and settings (JSON) of each; the index data lives in its own
-- directory, named by the id.
CREATE TABLE search_indexes (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    schema      TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
