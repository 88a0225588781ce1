//! E-mail from `infinity serve`: the welcome and new-follower messages, sent
//! to an SMTP sink that the test runs, or written to the outbox folder.

mod process;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use process::{visible_files, Server, SETTLE_BOUND};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as the sink received it.
#[derive(Debug, Clone)]
struct Received {
    /// The `RCPT TO` addresses, without the angle brackets.
    recipients: Vec<String>,
    /// The DATA section: headers and body.
    data: String,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// Starts an SMTP server on a free loopback port that accepts every
/// message into the returned inbox. It speaks only the commands a plain
/// client sends: EHLO or HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT.
async fn smtp_sink() -> (String, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let inbox = Inbox::default();
    let shared = inbox.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_smtp(stream, shared.clone()));
        }
    });
    (url, inbox)
}

async fn serve_smtp(stream: TcpStream, inbox: Inbox) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    writer.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
    let mut recipients = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if command.starts_with("MAIL FROM:") || command.starts_with("RSET") {
            recipients.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO:") {
            let address = line["RCPT TO:".len()..].trim();
            recipients.push(
                address
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            );
            b"250 OK\r\n"
        } else if command == "DATA" {
            writer
                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                .await
                .unwrap();
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                // Undo dot-stuffing: a leading dot was doubled by the client.
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            inbox.lock().unwrap().push(Received {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            b"250 OK queued\r\n"
        } else if command.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if command.starts_with("QUIT") {
            let _ = writer.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 command not implemented\r\n"
        };
        writer.write_all(reply).await.unwrap();
    }
}

/// Waits until `messages` returns at least `count` messages and returns them.
async fn at_least<T>(count: usize, mut messages: impl FnMut() -> Vec<T>) -> Vec<T> {
    let started = tokio::time::Instant::now();
    loop {
        let received = messages();
        if received.len() >= count {
            return received;
        }
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "{} of {count} messages after {SETTLE_BOUND:?}",
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers ada and bob, and has bob follow ada.
async fn register_and_follow(server: &Server) {
    server.register("ada").await;
    let bob = server.register("bob").await;
    server.follow(&bob, "ada").await;
}

/// Finds the one message whose text contains `subject_line`.
fn one_with<'a>(messages: &'a [String], subject_line: &str) -> &'a str {
    let found: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains(subject_line))
        .collect();
    assert_eq!(found.len(), 1, "{subject_line:?} in {messages:#?}");
    found[0]
}

/// Asserts the three messages of [`register_and_follow`]: a welcome to
/// each user, and a new-follower notice to ada that names bob.
fn assert_messages(messages: &[String]) {
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let welcomes: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("Subject: Welcome to Infinity"))
        .collect();
    assert_eq!(welcomes.len(), 2, "{messages:#?}");
    for name in ["ada", "bob"] {
        let welcome = welcomes
            .iter()
            .find(|m| m.contains(&format!("To: {name}@example.com")))
            .unwrap_or_else(|| panic!("no welcome to {name}: {welcomes:#?}"));
        assert!(welcome.contains(&format!("Hello {name},")), "{welcome}");
        assert!(
            welcome.contains("From: Infinity <no-reply@infinity.invalid>"),
            "{welcome}"
        );
    }

    let notice = one_with(messages, "Subject: bob now follows you on Infinity");
    assert!(notice.contains("To: ada@example.com"), "{notice}");
    assert!(notice.contains("Hello ada,"), "{notice}");
    assert!(notice.contains("bob started following you."), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_to_smtp() {
    let (url, inbox) = smtp_sink().await;
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path(), &["--smtp-url", &url], "serve.log");
    assert!(server.process.banner.contains("serving http://"));
    register_and_follow(&server).await;

    let received = at_least(3, || inbox.lock().unwrap().clone()).await;
    let texts: Vec<String> = received.iter().map(|m| m.data.clone()).collect();
    assert_messages(&texts);
    for message in &received {
        let to = &message.recipients;
        assert_eq!(to.len(), 1, "{message:?}");
        assert!(
            message.data.contains(&format!("To: {}", to[0])),
            "{message:?}"
        );
    }
    assert!(
        visible_files(&root.path().join("data/outbox")).is_empty(),
        "nothing goes to the outbox with SMTP set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_to_outbox_without_smtp() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path(), &[], "serve.log");
    register_and_follow(&server).await;

    let outbox = root.path().join("data/outbox");
    let names = at_least(3, || visible_files(&outbox)).await;
    for name in &names {
        assert!(name.starts_with("job-"), "{name}");
        assert!(name.ends_with(".eml"), "{name}");
    }
    let texts: Vec<String> = names
        .iter()
        .map(|name| std::fs::read_to_string(outbox.join(name)).unwrap())
        .collect();
    assert_messages(&texts);
}
