-- The social graph and its content. Times are Unix milliseconds (UTC).
-- Identifiers are minted by the application: time-ordered, carrying the
-- logical shard, below 2^53.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL,
    -- Lower-cased by the application, so that lookups ignore case.
    email         TEXT    NOT NULL,
    -- Argon2id in PHC string format.
    password_hash TEXT    NOT NULL,
    bio           TEXT    NOT NULL DEFAULT '',
    image         TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
-- "Alice" and "alice" would be the same person to a reader.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_username ON users (username);

-- A follow edge is stored on both users' sides, so that each side can live
-- on its owner's shard: who a user follows, and who follows a user.
CREATE TABLE following (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, target_id)
) WITHOUT ROWID;

CREATE TABLE followers (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    follower_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, follower_id)
) WITHOUT ROWID;

CREATE TABLE articles (
    id              INTEGER PRIMARY KEY,
    author_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug            TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    -- The tags as a sorted JSON array of strings, so that a page of articles
    -- needs no second query; article_tags is the index for filtering.
    tag_list        TEXT    NOT NULL DEFAULT '[]',
    -- Kept equal to the count of rows in favorites by the same transaction.
    favorites_count INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX articles_slug_key ON articles (slug);
CREATE INDEX articles_author ON articles (author_id, id);

CREATE TABLE article_tags (
    article_id INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    tag        TEXT    NOT NULL,
    PRIMARY KEY (article_id, tag)
) WITHOUT ROWID;
CREATE INDEX article_tags_tag ON article_tags (tag, article_id);

CREATE TABLE favorites (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    article_id INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, article_id)
) WITHOUT ROWID;
CREATE INDEX favorites_article ON favorites (article_id);

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY,
    article_id INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX comments_article ON comments (article_id, id);

-- Login sessions. The token is never stored, only its SHA-256 digest (hex).
CREATE TABLE sessions (
    token_digest TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_id);

-- The embedded job queue. A job is inserted in the same transaction as the
-- write that causes it.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    -- queued, running, done or dead.
    state       TEXT    NOT NULL DEFAULT 'queued',
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- The earliest time a worker may take the job (backoff after a failure).
    run_at      INTEGER NOT NULL,
    -- The worker holding the job and until when; another worker may take it
    -- once the lease has expired.
    lease_owner TEXT,
    lease_until INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX jobs_ready ON jobs (state, run_at);
