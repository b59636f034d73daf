-- Producer message ids seen within the deduplication window, per topic. A row with
-- partition_no = -1 is a claim of a publish still in flight; `expires_at` ends a claim
-- (briefly) or the id's window.
CREATE TABLE message_ids (
    topic_id     TEXT NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    message_id   TEXT NOT NULL,
    partition_no BIGINT NOT NULL,
    offset_no    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (topic_id, message_id)
);

-- The sweep that forgets expired ids.
CREATE INDEX message_ids_expiry ON message_ids (expires_at);
