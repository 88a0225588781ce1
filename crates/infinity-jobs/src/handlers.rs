//! The job kinds and their handlers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infinity_media::background::BackgroundError;
use infinity_media::{Limits, MediaError};
use infinity_store::{Id, JobRecord, NewJob, Store, UploadState, VariantRecord};
use serde::Deserialize;
use serde_json::json;

use crate::mail::{Mail, MailError, Mailer};
use crate::objects::{original_key, variant_key, ObjectStore, VARIANT_SIZES};
use crate::worker::{Handler, JobError};

pub const WELCOME_EMAIL: &str = "email.welcome";
pub const NEW_FOLLOWER_EMAIL: &str = "email.new_follower";
pub const MAKE_VARIANTS: &str = "media.variants";

/// Builds the job that makes the variants of upload `id`.
pub fn make_variants(id: Id) -> NewJob {
    NewJob {
        kind: MAKE_VARIANTS.into(),
        payload: json!({ "upload_id": id }),
    }
}

fn payload<T: for<'de> Deserialize<'de>>(job: &JobRecord) -> Result<T, JobError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("invalid payload for {}: {e}", job.kind)))
}

fn mail_error(error: MailError) -> JobError {
    match error {
        MailError::Address { .. } | MailError::Build(_) | MailError::SmtpUrl(_) => {
            JobError::Permanent(error.to_string())
        }
        other => JobError::Retry(other.to_string()),
    }
}

fn store_error(error: infinity_store::StoreError) -> JobError {
    JobError::Retry(format!("database: {error}"))
}

/// `email.welcome`: greets a new user.
pub struct WelcomeEmail(pub Arc<Mailer>);

#[derive(Deserialize)]
struct Welcome {
    email: String,
    username: String,
}

#[async_trait]
impl Handler for WelcomeEmail {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError> {
        let welcome: Welcome = payload(job)?;
        let mail = Mail {
            to: welcome.email,
            subject: "Welcome to Infinity".into(),
            body: format!(
                "Hello {},\n\nyour Infinity account is ready. Share your first photo!\n",
                welcome.username
            ),
        };
        self.0
            .send(&format!("job-{}", job.id), mail)
            .await
            .map_err(mail_error)
    }
}

/// `email.new_follower`: e-mails a user the name of their new follower.
pub struct NewFollowerEmail {
    pub mailer: Arc<Mailer>,
    pub store: Arc<dyn Store>,
}

#[derive(Deserialize)]
struct NewFollower {
    user_id: Id,
    follower_id: Id,
}

#[async_trait]
impl Handler for NewFollowerEmail {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError> {
        let notice: NewFollower = payload(job)?;
        let user = self
            .store
            .user_by_id(notice.user_id)
            .await
            .map_err(store_error)?;
        let follower = self
            .store
            .user_by_id(notice.follower_id)
            .await
            .map_err(store_error)?;
        // Either account was deleted since: there is no one to tell.
        let (Some(user), Some(follower)) = (user, follower) else {
            return Ok(());
        };
        let mail = Mail {
            to: user.email,
            subject: format!("{} now follows you on Infinity", follower.username),
            body: format!(
                "Hello {},\n\n{} started following you.\n",
                user.username, follower.username
            ),
        };
        self.mailer
            .send(&format!("job-{}", job.id), mail)
            .await
            .map_err(mail_error)
    }
}

/// `media.variants`: makes an upload's variants from its original.
pub struct MakeVariants {
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub limits: Limits,
    /// The maximum time a decode and resize may take before the job fails.
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct UploadJob {
    upload_id: Id,
}

#[async_trait]
impl Handler for MakeVariants {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError> {
        let UploadJob { upload_id } = payload(job)?;
        let Some(upload) = self
            .store
            .upload_by_id(upload_id)
            .await
            .map_err(store_error)?
        else {
            return Ok(());
        };
        if upload.state != UploadState::Processing {
            return Ok(());
        }
        let original = self
            .objects
            .get(&original_key(&upload.source_digest))
            .await
            .map_err(|e| JobError::Retry(format!("reading the original failed: {e}")))?
            .ok_or_else(|| JobError::Permanent("the original is missing".into()))?;

        match self.render(original).await? {
            Ok(rendition) => {
                let mut variants = Vec::with_capacity(rendition.variants.len());
                for variant in rendition.variants {
                    let key = variant_key(&upload.source_digest, variant.size);
                    self.objects
                        .put(&key, variant.bytes)
                        .await
                        .map_err(|e| JobError::Retry(format!("storing {key} failed: {e}")))?;
                    variants.push(VariantRecord {
                        size: variant.size,
                        width: variant.width,
                        height: variant.height,
                        mime: variant.mime.to_string(),
                    });
                }
                self.store
                    .finish_upload(upload_id, variants, rendition.note)
                    .await
                    .map_err(store_error)
            }
            Err(error) => {
                // The image itself is at fault: record why for its owner and
                // end the job, since a retry would fail the same way.
                tracing::info!(upload_id, %error, "upload cannot be processed");
                self.store
                    .fail_upload(upload_id, &error.to_string())
                    .await
                    .map_err(store_error)
            }
        }
    }
}

impl MakeVariants {
    /// Decodes and resizes on a low-priority image thread, bounded by
    /// `timeout`. The outer error is the job's, the inner one the image's.
    async fn render(
        &self,
        original: Vec<u8>,
    ) -> Result<Result<infinity_media::Rendition, MediaError>, JobError> {
        let limits = self.limits.clone();
        let work = move || infinity_media::render(&original, &limits, &VARIANT_SIZES);
        match infinity_media::background::run(self.timeout, work).await {
            Ok(result) => Ok(result),
            Err(BackgroundError::Panicked(panic)) => {
                Err(JobError::Permanent(format!("rendering panicked: {panic}")))
            }
            Err(timed_out @ BackgroundError::TimedOut(_)) => {
                Err(JobError::Retry(format!("rendering {timed_out}")))
            }
        }
    }
}
