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
}

pub type StoreResult<T> = Result<T, StoreError>;
