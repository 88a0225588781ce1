-- The social graph, its content, sessions, uploads and the job queue.
-- Times are Unix milliseconds (UTC). Identifiers are minted by the
-- application: time-ordered, carrying the logical shard, below 2^53.
-- Lists are JSON text, decoded by the application.

CREATE TABLE users (
    id            BIGINT PRIMARY KEY,
    username      TEXT   NOT NULL,
    -- Lower-cased by the application, so that lookups ignore case.
    email         TEXT   NOT NULL,
    -- Argon2id in PHC string format.
    password_hash TEXT   NOT NULL,
    bio           TEXT   NOT NULL DEFAULT '',
    image         TEXT   NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- "Alice" and "alice" would be the same person to a reader.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_username ON users (username);

-- A follow edge is stored on both users' sides, so that each side can live
-- on its owner's shard: who a user follows, and who follows a user.
CREATE TABLE following (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, target_id)
);
CREATE INDEX following_target ON following (target_id);

CREATE TABLE followers (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    follower_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, follower_id)
);
CREATE INDEX followers_follower ON followers (follower_id);

CREATE TABLE articles (
    id              BIGINT PRIMARY KEY,
    author_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug            TEXT   NOT NULL,
    title           TEXT   NOT NULL,
    description     TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    -- The tags as a sorted JSON array of strings, so that a page of articles
    -- needs no second query; article_tags is the index for filtering.
    tag_list        TEXT   NOT NULL DEFAULT '[]',
    -- Photos shown with the article, as a JSON array of upload references.
    images          TEXT   NOT NULL DEFAULT '[]',
    -- Kept equal to the count of rows in favorites by the same transaction.
    favorites_count BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX articles_slug_key ON articles (slug);
CREATE INDEX articles_author ON articles (author_id, id);

CREATE TABLE article_tags (
    article_id BIGINT NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    tag        TEXT   NOT NULL,
    PRIMARY KEY (article_id, tag)
);
CREATE INDEX article_tags_tag ON article_tags (tag, article_id);

CREATE TABLE favorites (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    article_id BIGINT NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, article_id)
);
CREATE INDEX favorites_article ON favorites (article_id);

CREATE TABLE comments (
    id         BIGINT PRIMARY KEY,
    article_id BIGINT NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    author_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX comments_article ON comments (article_id, id);
CREATE INDEX comments_author ON comments (author_id);

-- Login sessions. The token is never stored, only its SHA-256 digest (hex).
CREATE TABLE sessions (
    token_digest TEXT   PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- The embedded job queue. A job is inserted in the same transaction as the
-- write that causes it.
CREATE TABLE jobs (
    id          BIGINT PRIMARY KEY,
    kind        TEXT   NOT NULL,
    payload     TEXT   NOT NULL,
    -- queued, running, done or dead.
    state       TEXT   NOT NULL DEFAULT 'queued',
    attempts    BIGINT NOT NULL DEFAULT 0,
    -- The earliest time a worker may take the job (backoff after a failure).
    run_at      BIGINT NOT NULL,
    -- The worker holding the job and until when; another worker may take it
    -- once the lease has expired.
    lease_owner TEXT,
    lease_until BIGINT,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (state, run_at);

-- Photo uploads. The original is kept privately under its SHA-256 digest;
-- the public variants are made by a background job.
CREATE TABLE uploads (
    id            BIGINT  PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- processing, ready or failed.
    state         TEXT    NOT NULL DEFAULT 'processing',
    -- SHA-256 of the original bytes, in hex.
    source_digest TEXT    NOT NULL,
    -- jpeg, png, webp or gif, identified from the content.
    format        TEXT    NOT NULL,
    -- The displayed size, after the EXIF orientation is applied.
    width         BIGINT  NOT NULL,
    height        BIGINT  NOT NULL,
    animated      BOOLEAN NOT NULL DEFAULT false,
    -- JSON array of the made variants: size, width, height, mime.
    variants      TEXT    NOT NULL DEFAULT '[]',
    note          TEXT,
    error         TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX uploads_user ON uploads (user_id);
