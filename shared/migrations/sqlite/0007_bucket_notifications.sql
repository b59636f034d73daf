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
