-- Object storage: buckets, the object index, and the outbox of object events.
-- A row of `objects` is what makes an object visible: its blob is written (and synced)
-- before the row commits, and deleted only after the row that names it is gone.

CREATE TABLE buckets (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    project_id            TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                  TEXT COLLATE "C" NOT NULL,
    public_read           BIGINT NOT NULL,
    max_object_size       BIGINT,
    allowed_content_types TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- `prev_blob_id`, `prev_size` and `prev_etag` hold what an upsert replaced, so the writer's transaction
-- learns it from RETURNING (portable to both engines) and can settle quotas and delete
-- the old blob after commit.
CREATE TABLE objects (
    bucket_id            TEXT COLLATE "C" NOT NULL REFERENCES buckets (id) ON DELETE CASCADE,
    key                  TEXT COLLATE "C" NOT NULL,
    blob_id              TEXT NOT NULL,
    size                 BIGINT NOT NULL,
    etag                 TEXT NOT NULL,
    content_type         TEXT NOT NULL,
    cache_control        TEXT,
    content_disposition  TEXT,
    metadata             TEXT NOT NULL,
    sha256               TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    prev_blob_id         TEXT,
    prev_size            BIGINT,
    prev_etag            TEXT,
    PRIMARY KEY (bucket_id, key)
);

-- Written in the same transaction as each change; the messaging service relays it.
CREATE TABLE object_events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT,
    at          BIGINT NOT NULL
);

-- Multipart uploads in progress. Each part is a blob of its own, counted against the
-- project's stored bytes from the moment it is acknowledged until the upload completes
-- (the parts become the object) or is aborted or expires (the parts are deleted).
CREATE TABLE uploads (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    bucket_id            TEXT COLLATE "C" NOT NULL REFERENCES buckets (id) ON DELETE CASCADE,
    key                  TEXT COLLATE "C" NOT NULL,
    content_type         TEXT NOT NULL,
    cache_control        TEXT,
    content_disposition  TEXT,
    metadata             TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL
);

CREATE TABLE upload_parts (
    upload_id    TEXT COLLATE "C" NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    part_number  BIGINT NOT NULL,
    blob_id      TEXT NOT NULL,
    size         BIGINT NOT NULL,
    md5          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

-- For the collection of orphaned blobs at start: is this blob named anywhere?
CREATE INDEX objects_by_blob ON objects (blob_id);
CREATE INDEX upload_parts_by_blob ON upload_parts (blob_id);
