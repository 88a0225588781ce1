//! JSON shapes of the RealWorld API, and their assembly from cached records
//! plus the viewer's own follows and favourites.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use infinity_store::{ArticleRecord, CommentRecord, Id, ProfileRecord, UserRecord};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// RFC 3339 in UTC with milliseconds, as JavaScript's `toISOString` writes.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
pub struct UserView {
    pub email: String,
    pub token: String,
    pub username: String,
    pub bio: String,
    pub image: String,
}

impl UserView {
    pub fn new(user: UserRecord, token: String) -> Self {
        Self {
            email: user.email,
            token,
            username: user.username,
            bio: user.bio,
            image: user.image,
        }
    }
}

#[derive(Serialize)]
pub struct ProfileView {
    pub username: String,
    pub bio: String,
    pub image: String,
    pub following: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArticleView {
    pub slug: String,
    pub title: String,
    pub description: String,
    /// Left out of lists, as the specification's list schema does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub tag_list: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub favorited: bool,
    pub favorites_count: i64,
    pub author: ProfileView,
    /// Photos of the article, an Infinity addition; left out when there are
    /// none, so plain RealWorld clients see the usual shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageView>,
}

#[derive(Serialize)]
pub struct ImageView {
    pub id: Id,
    pub width: u32,
    pub height: u32,
    /// Variant URLs by their longest side in pixels.
    pub urls: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentView {
    pub id: Id,
    pub created_at: String,
    pub updated_at: String,
    pub body: String,
    pub author: ProfileView,
}

/// The viewer of a response: anonymous, or a user with their
/// follows and favourites.
#[derive(Default)]
pub struct Viewer {
    following: Arc<HashSet<Id>>,
    favorites: Arc<HashSet<Id>>,
}

impl Viewer {
    pub fn follows(&self, user: Id) -> bool {
        self.following.contains(&user)
    }

    pub fn favorited(&self, article: Id) -> bool {
        self.favorites.contains(&article)
    }
}

impl AppState {
    pub async fn viewer(&self, user: Option<Id>) -> ApiResult<Viewer> {
        let Some(user) = user else {
            return Ok(Viewer::default());
        };
        Ok(Viewer {
            following: self.reads.following(user).await?,
            favorites: self.reads.favorites(user).await?,
        })
    }

    /// Builds the profile of user `id` as `viewer` is shown it.
    pub async fn profile_view(&self, viewer: &Viewer, id: Id) -> ApiResult<ProfileView> {
        let profile = self
            .reads
            .profile(id)
            .await?
            .ok_or(ApiError::NotFound("profile"))?;
        Ok(profile_view(viewer, profile))
    }

    pub async fn article_view(
        &self,
        viewer: &Viewer,
        article: ArticleRecord,
        with_body: bool,
    ) -> ApiResult<ArticleView> {
        let author = self.profile_view(viewer, article.author_id).await?;
        let images = article
            .images
            .iter()
            .map(|image| self.image_view(image))
            .collect();
        Ok(ArticleView {
            images,
            favorited: viewer.favorited(article.id),
            favorites_count: article.favorites_count,
            slug: article.slug,
            title: article.title,
            description: article.description,
            body: with_body.then_some(article.body),
            tag_list: article.tags,
            created_at: timestamp(article.created_at),
            updated_at: timestamp(article.updated_at),
            author,
        })
    }

    fn image_view(&self, image: &infinity_store::ImageRef) -> ImageView {
        let urls = match &self.uploads {
            Some(settings) => infinity_jobs::objects::VARIANT_SIZES
                .iter()
                .map(|&size| {
                    let url = crate::uploads::variant_url(settings, &image.digest, size);
                    (size.to_string(), url)
                })
                .collect(),
            None => Default::default(),
        };
        ImageView {
            id: image.upload_id,
            width: image.width,
            height: image.height,
            urls,
        }
    }

    pub async fn comment_view(
        &self,
        viewer: &Viewer,
        comment: CommentRecord,
    ) -> ApiResult<CommentView> {
        Ok(CommentView {
            id: comment.id,
            created_at: timestamp(comment.created_at),
            updated_at: timestamp(comment.updated_at),
            body: comment.body,
            author: self.profile_view(viewer, comment.author_id).await?,
        })
    }
}

pub fn profile_view(viewer: &Viewer, profile: ProfileRecord) -> ProfileView {
    ProfileView {
        following: viewer.follows(profile.id),
        username: profile.username,
        bio: profile.bio,
        image: profile.image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_milliseconds_and_z() {
        let time = DateTime::from_timestamp_millis(1_767_225_600_007).unwrap();
        assert_eq!(timestamp(time), "2026-01-01T00:00:00.007Z");
    }
}
