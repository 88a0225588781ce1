//! The body and headers of a job's message.

use infinity_store::{Id, JobRecord};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};

/// The header that carries why a dead-lettered job failed.
pub const ERROR_HEADER: &str = "x-error";

/// The maximum length of the error in [`ERROR_HEADER`], in bytes.
const MAX_ERROR_LENGTH: usize = 1000;

/// A job's message: the id of its row, which contains the payload, and its kind
/// for logs and for operators reading the queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: Id,
    pub kind: String,
}

impl JobMessage {
    pub fn of(job: &JobRecord) -> Self {
        Self {
            id: job.id,
            kind: job.kind.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job message serialises")
    }

    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Properties of a persistent message (delivery mode 2), so that the
    /// broker keeps it on disk.
    pub fn properties(&self) -> BasicProperties {
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.id.to_string().into())
            .with_type(self.kind.as_str().into())
    }
}

/// Adds `error` to `properties` as the [`ERROR_HEADER`].
pub fn with_error(properties: BasicProperties, error: &str) -> BasicProperties {
    let mut end = error.len().min(MAX_ERROR_LENGTH);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    let mut headers = FieldTable::default();
    headers.insert(
        ERROR_HEADER.into(),
        AMQPValue::LongString(LongString::from(error.as_bytes()[..end].to_vec())),
    );
    properties.with_headers(headers)
}

/// Returns why a dead-lettered message failed: the [`ERROR_HEADER`] that a
/// worker set, or the reason the broker gave in `x-first-death-reason`.
pub fn error_of(properties: &BasicProperties) -> String {
    let Some(headers) = properties.headers() else {
        return "unknown".to_string();
    };
    let text = |key: &str| match headers.inner().get(key) {
        Some(AMQPValue::LongString(text)) => {
            Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
        }
        Some(AMQPValue::ShortString(text)) => Some(text.as_str().to_string()),
        _ => None,
    };
    if let Some(error) = text(ERROR_HEADER) {
        return error;
    }
    match text("x-first-death-reason").as_deref() {
        Some("delivery_limit") => "the broker's delivery limit was reached".to_string(),
        Some(reason) => format!("dead-lettered by the broker ({reason})"),
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips() {
        let message = JobMessage {
            id: 42,
            kind: "media.variants".into(),
        };
        assert_eq!(JobMessage::decode(&message.encode()).unwrap(), message);
        let properties = message.properties();
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(properties.message_id().as_ref().unwrap().as_str(), "42");
    }

    #[test]
    fn error_header_is_read_back_and_bounded() {
        let properties = with_error(BasicProperties::default(), "boom");
        assert_eq!(error_of(&properties), "boom");
        let long = "é".repeat(MAX_ERROR_LENGTH);
        let properties = with_error(BasicProperties::default(), &long);
        assert!(error_of(&properties).len() <= MAX_ERROR_LENGTH);
        assert_eq!(error_of(&BasicProperties::default()), "unknown");
    }
}
