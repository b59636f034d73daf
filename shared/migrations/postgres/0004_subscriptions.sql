-- Subscriptions of the embedded backend: their settings, each partition's committed offset
-- (every message below it is acknowledged), and the state of messages at or past it that
-- have been delivered, delayed or acknowledged out of order.

CREATE TABLE subscriptions (
    id                    TEXT PRIMARY KEY,
    project_id            TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    topic_id              TEXT NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    ack_deadline_seconds  BIGINT NOT NULL,
    max_delivery_attempts BIGINT NOT NULL,
    dead_letter_topic_id  TEXT REFERENCES topics (id) ON DELETE SET NULL,
    backoff_min_ms        BIGINT NOT NULL,
    backoff_max_ms        BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE subscription_offsets (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    partition_no    BIGINT NOT NULL,
    committed       BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, partition_no)
);

-- `state`: 0 waiting (delayed, or nacked until `visible_at`), 1 leased until `visible_at`,
-- 2 acknowledged.
CREATE TABLE subscription_messages (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    partition_no    BIGINT NOT NULL,
    offset_no       BIGINT NOT NULL,
    state           BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    visible_at      BIGINT NOT NULL,
    lease_id        TEXT,
    PRIMARY KEY (subscription_id, partition_no, offset_no)
);

-- The due-message query of every pull: waiting or leased rows whose time has come.
CREATE INDEX subscription_messages_due ON subscription_messages (subscription_id, state, visible_at);
