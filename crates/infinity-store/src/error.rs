use thiserror::Error;

/// A field whose uniqueness the store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Username,
    Email,
    Slug,
}

impl UniqueField {
    /// The field's name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            UniqueField::Username => "username",
            UniqueField::Email => "email",
            UniqueField::Slug => "slug",
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{} is already taken", .0.name())]
    Taken(UniqueField),
    #[error("not found")]
    NotFound,
    #[error("invalid stored data: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No database server can take the request right now, such as while a
    /// replica is being promoted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when the request may succeed if tried again later: the database
    /// is unreachable, shutting down or not yet promoted, as opposed to a
    /// request the database rejects.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(error) => is_connection_error(error),
            _ => false,
        }
    }

    /// True when the request carried text the database cannot store, such
    /// as a NUL character.
    pub fn is_invalid_text(&self) -> bool {
        matches!(self, StoreError::Database(error) if is_invalid_text_error(error))
    }

    /// True when an insert minted a row id that another process had minted
    /// in the same millisecond (see [`crate::ids`]). The same write with a
    /// fresh id succeeds.
    pub fn is_id_taken(&self) -> bool {
        matches!(self, StoreError::Database(error) if is_id_taken_error(error))
    }
}

/// Tables whose primary key is a minted row id.
const ID_TABLES: [&str; 5] = ["users", "articles", "comments", "jobs", "uploads"];

/// True when `error` is a primary-key violation on a minted row id. It
/// reads PostgreSQL's constraint name (`TABLE_pkey`) or SQLite's message
/// (`UNIQUE constraint failed: TABLE.id`).
pub(crate) fn is_id_taken_error(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    if !db.is_unique_violation() {
        return false;
    }
    if let Some(constraint) = db.constraint() {
        return ID_TABLES
            .iter()
            .any(|table| constraint.strip_suffix("_pkey") == Some(*table));
    }
    db.message()
        .strip_prefix("UNIQUE constraint failed: ")
        .and_then(|columns| columns.strip_suffix(".id"))
        .is_some_and(|table| ID_TABLES.contains(&table))
}

/// Attempts of a write whose minted id another process took first.
const ID_ATTEMPTS: usize = 5;

/// Runs `write` until it does not fail with [`StoreError::is_id_taken`], at
/// most [`ID_ATTEMPTS`] times. Each call of `write` must mint its ids anew.
pub async fn with_fresh_ids<T, F, Fut>(mut write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(error) if error.is_id_taken() && attempt < ID_ATTEMPTS => {
                tracing::debug!(%error, attempt, "a minted id was taken by another process; minting another");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// True when PostgreSQL rejected a text value it cannot store, such as one
/// with a NUL character (SQLSTATE 22021 or 22P05). The request, not the
/// server, is at fault, so another server would reject it too.
pub(crate) fn is_invalid_text_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "22021" | "22P05")),
        _ => false,
    }
}

/// True for errors of the connection rather than of the statement: network
/// failures, an exhausted or closed pool, and the server states in which
/// PostgreSQL rejects every statement (shutting down, starting up, or read
/// only because it is a replica).
pub(crate) fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception. 57P01-57P03: the server is
            // shutting down or starting up. 25006: a read-only transaction,
            // as on a replica. 40001 is not here, because it is a conflict.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "25006")
        }),
        _ => false,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
