-- Push subscriptions, their delivery log, and dead letters kept with their payload.

-- A push subscription's endpoint, signing secret and concurrency; all NULL for a pull one.
ALTER TABLE subscriptions ADD COLUMN push_endpoint TEXT;
ALTER TABLE subscriptions ADD COLUMN push_secret TEXT;
ALTER TABLE subscriptions ADD COLUMN push_concurrency BIGINT;

-- A message past its last attempt keeps its row in state 3 (dead) with its payload and
-- publication time, so that it can be redriven after retention removed it from the log.
-- `visible_at` of a dead row is when it died.
ALTER TABLE subscription_messages ADD COLUMN payload BYTEA;
ALTER TABLE subscription_messages ADD COLUMN published_at BIGINT;

-- The latest push attempts of each subscription (older ones are pruned).
CREATE TABLE push_attempts (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    at              BIGINT NOT NULL,
    partition_no    BIGINT NOT NULL,
    offset_no       BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    status          BIGINT,
    latency_ms      BIGINT NOT NULL,
    error           TEXT,
    PRIMARY KEY (subscription_id, at, partition_no, offset_no, attempt)
);
