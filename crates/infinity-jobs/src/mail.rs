//! Outgoing e-mail: by SMTP when a server is configured, else as `.eml`
//! files in an outbox folder.

use std::path::PathBuf;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid SMTP URL {0:?}: expected smtp://HOST[:PORT]")]
    SmtpUrl(String),
    #[error("invalid e-mail address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("building the message failed: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP delivery failed: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("writing to the outbox failed: {0}")]
    Outbox(#[from] std::io::Error),
}

/// The destination of outgoing mail.
pub enum Transport {
    /// One `<key>.eml` file per message in this folder.
    Outbox(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

/// A message to send.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

/// Parses `smtp://HOST[:PORT]` (port 25 by default).
// NOTE: this build sends without TLS, which suits a relay on the same host or
// network, not a mail provider across the internet.
fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let invalid = || MailError::SmtpUrl(url.to_string());
    let rest = url.strip_prefix("smtp://").ok_or_else(invalid)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| invalid())?),
        None => (rest, 25),
    };
    if host.is_empty() || host.contains('/') {
        return Err(invalid());
    }
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build(),
    )
}

impl Mailer {
    /// Sends by SMTP to `smtp_url` (as `smtp://host:port`), or writes to
    /// `outbox` when it is `None`.
    pub fn new(smtp_url: Option<&str>, outbox: PathBuf, from: &str) -> Result<Self, MailError> {
        let transport = match smtp_url {
            Some(url) => Transport::Smtp(smtp_transport(url)?),
            None => Transport::Outbox(outbox),
        };
        Ok(Self {
            transport,
            from: mailbox(from)?,
        })
    }

    pub fn describe(&self) -> &'static str {
        match self.transport {
            Transport::Outbox(_) => "outbox folder",
            Transport::Smtp(_) => "SMTP",
        }
    }

    /// Sends `mail` once per `key`: the key names the outbox file and the
    /// Message-ID, so a job that runs twice writes one file, and an SMTP
    /// receiver can drop the duplicate by its Message-ID.
    pub async fn send(&self, key: &str, mail: Mail) -> Result<(), MailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(mailbox(&mail.to)?)
            .subject(mail.subject)
            .message_id(Some(format!("<{key}@infinity.invalid>")))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body)?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await?;
            }
            Transport::Outbox(folder) => {
                let path = folder.join(format!("{key}.eml"));
                if tokio::fs::try_exists(&path).await? {
                    return Ok(());
                }
                tokio::fs::create_dir_all(folder).await?;
                let temporary = folder.join(format!(".{key}.eml.tmp"));
                tokio::fs::write(&temporary, message.formatted()).await?;
                tokio::fs::rename(&temporary, &path).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_writes_one_file_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(
            None,
            dir.path().to_path_buf(),
            "Infinity <no-reply@example.com>",
        )
        .unwrap();
        for _ in 0..2 {
            let mail = Mail {
                to: "ada@example.com".into(),
                subject: "Welcome".into(),
                body: "Hello Ada".into(),
            };
            mailer.send("job-7", mail).await.unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(dir.path().join("job-7.eml")).unwrap();
        assert!(text.contains("To: ada@example.com"));
        assert!(text.contains("Subject: Welcome"));
        assert!(text.contains("Message-ID: <job-7@infinity.invalid>"));
        assert!(text.contains("Hello Ada"));
    }

    #[test]
    fn smtp_urls() {
        assert!(smtp_transport("smtp://127.0.0.1:2525").is_ok());
        assert!(smtp_transport("smtp://mail.example.com").is_ok());
        for bad in ["http://x", "smtp://", "smtp://x:port", "smtp://:25"] {
            assert!(smtp_transport(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_sender_is_rejected() {
        let error = Mailer::new(None, PathBuf::from("x"), "not an address")
            .err()
            .unwrap();
        assert!(error.to_string().contains("not an address"));
    }
}
