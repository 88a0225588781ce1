-- Photo uploads. The original is kept privately under its SHA-256 digest;
-- the public variants are made by a background job.
CREATE TABLE uploads (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- processing, ready or failed.
    state         TEXT    NOT NULL DEFAULT 'processing',
    -- SHA-256 of the original bytes, in hex.
    source_digest TEXT    NOT NULL,
    -- jpeg, png, webp or gif, identified from the content.
    format        TEXT    NOT NULL,
    -- The displayed size, after the EXIF orientation is applied.
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    animated      INTEGER NOT NULL DEFAULT 0,
    -- JSON array of the made variants: size, width, height, mime.
    variants      TEXT    NOT NULL DEFAULT '[]',
    note          TEXT,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX uploads_user ON uploads (user_id);

-- Photos shown with an article, as a JSON array of upload references.
ALTER TABLE articles ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
