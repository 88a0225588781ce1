//! SQL helpers that both engines share.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::error::{StoreError, StoreResult, UniqueField};
use crate::model::ArticleFilter;

pub(crate) const ARTICLE_COLUMNS: &str =
    "a.id, a.author_id, a.slug, a.title, a.description, a.body, \
     a.tag_list, a.images, a.favorites_count, a.created_at, a.updated_at";

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Turns the row count of a write that targets one row by its key into
/// [`StoreError::NotFound`] when there was no such row.
pub(crate) fn one_row(rows_affected: u64) -> StoreResult<()> {
    if rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Maps a unique-index violation to the field it protects.
pub(crate) fn map_unique(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            let message = db.message();
            if message.contains("users.email") || message.contains("users_email_key") {
                return StoreError::Taken(UniqueField::Email);
            }
            if message.contains("username") {
                return StoreError::Taken(UniqueField::Username);
            }
            if message.contains("articles.slug") || message.contains("articles_slug_key") {
                return StoreError::Taken(UniqueField::Slug);
            }
        }
    }
    StoreError::Database(error)
}

pub(crate) fn sorted_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    tags
}

/// Appends the `WHERE` clause of an article list to a query over
/// `articles a`.
pub(crate) fn push_article_filter<'a, DB>(query: &mut QueryBuilder<'a, DB>, filter: &ArticleFilter)
where
    DB: Database,
    String: 'a + Encode<'a, DB> + Type<DB>,
{
    query.push(" WHERE 1 = 1");
    if let Some(tag) = &filter.tag {
        query
            .push(" AND a.id IN (SELECT article_id FROM article_tags WHERE tag = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(author) = &filter.author {
        query
            .push(" AND a.author_id = (SELECT id FROM users WHERE username = ")
            .push_bind(author.clone())
            .push(")");
    }
    if let Some(user) = &filter.favorited_by {
        query
            .push(
                " AND a.id IN (SELECT f.article_id FROM favorites f JOIN users u \
                 ON u.id = f.user_id WHERE u.username = ",
            )
            .push_bind(user.clone())
            .push(")");
    }
}
