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
