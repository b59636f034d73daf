-- Messaging: topic definitions. The messages themselves live in the message log (the
-- embedded log's files, or Kafka), never in the metadata store.

CREATE TABLE topics (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    partitions        BIGINT NOT NULL,
    retention_seconds BIGINT,
    retention_bytes   BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
