-- Bucket notifications: which object events of a project's bucket are published to which
-- topic. `events` is a comma-separated list of event types.
CREATE TABLE bucket_notifications (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    bucket      TEXT NOT NULL,
    topic_id    TEXT NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    events      TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, bucket, topic_id)
);

-- Insertion order of the outbox, which for changes of one object (serialized by its row) is
-- the order they committed in; SQLite's rowid gives the same.
ALTER TABLE object_events ADD COLUMN seq BIGSERIAL;
CREATE INDEX object_events_seq ON object_events (seq);
