//! A welcome e-mail sent through RabbitMQ to an SMTP sink: a message
//! delivered again after its job is done sends no second e-mail.
//!
//! E-mail is sent at least once, not exactly once: a worker that dies after
//! the SMTP server accepted a message and before the job's row is marked
//! done sends it again. This test covers the duplicate deliveries that the
//! row prevents: a relay publishing twice, a redelivery after the outcome
//! was recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infinity_broker::{connect, BrokerConfig, BrokerWorker, JobMessage, Relay};
use infinity_jobs::handlers::{WelcomeEmail, WELCOME_EMAIL};
use infinity_jobs::mail::Mailer;
use infinity_jobs::Handlers;
use infinity_local::shared_rabbit;
use infinity_store::{
    JobQueue, JobState, NewJob, NewUser, Outbox, SqliteOptions, SqliteStore, Store,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Starts an SMTP server on a free loopback port that accepts every message
/// and counts them. It speaks only what a plain client sends.
async fn smtp_sink() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_smtp(stream, counter.clone()));
        }
    });
    (url, received)
}

async fn serve_smtp(stream: TcpStream, received: Arc<AtomicUsize>) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    writer.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.to_ascii_uppercase();
        let reply: &[u8] = if command == "DATA" {
            writer.write_all(b"354 go on\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
            }
            received.fetch_add(1, Ordering::SeqCst);
            b"250 OK queued\r\n"
        } else if command.starts_with("QUIT") {
            let _ = writer.write_all(b"221 bye\r\n").await;
            return;
        } else if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else {
            b"250 OK\r\n"
        };
        writer.write_all(reply).await.unwrap();
    }
}

async fn publish_again(config: &BrokerConfig, message: &JobMessage) {
    let connection = connect(&config.url, "test-publisher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            config.names().work.as_str().into(),
            BasicPublishOptions::default(),
            &message.encode(),
            message.properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_welcome_sends_one_mail() {
    let rabbit = shared_rabbit().expect("a private RabbitMQ node starts");
    let config = BrokerConfig {
        prefix: format!("mail-{}", std::process::id()),
        base_backoff: Duration::from_millis(200),
        ..BrokerConfig::new(rabbit.url())
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("jobs.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let (smtp_url, received) = smtp_sink().await;
    let mailer = Mailer::new(
        Some(&smtp_url),
        dir.path().join("outbox"),
        "Infinity <no-reply@example.com>",
    )
    .unwrap();
    let mut handlers: Handlers = HashMap::new();
    handlers.insert(
        WELCOME_EMAIL.into(),
        Arc::new(WelcomeEmail(Arc::new(mailer))),
    );
    let outbox: Arc<dyn Outbox> = store.clone();
    let (stop, stopped) = watch::channel(false);
    let tasks = [
        tokio::spawn(Relay::new(outbox.clone(), &config).run(stopped.clone())),
        tokio::spawn(Arc::new(BrokerWorker::new(outbox, handlers, config.clone(), 2)).run(stopped)),
    ];

    let welcome = NewJob {
        kind: WELCOME_EMAIL.into(),
        payload: json!({"email": "ada@example.com", "username": "ada"}),
    };
    let user = NewUser {
        username: "ada".into(),
        email: "ada@example.com".into(),
        password_hash: "x".into(),
    };
    store.create_user(user, vec![welcome]).await.unwrap();
    let job = store.jobs(None, 10).await.unwrap().remove(0);
    let started = Instant::now();
    while store
        .jobs(Some(JobState::Done), 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(received.load(Ordering::SeqCst), 1);

    let message = JobMessage {
        id: job.id,
        kind: WELCOME_EMAIL.into(),
    };
    publish_again(&config, &message).await;
    publish_again(&config, &message).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "a duplicate sent a mail"
    );
    let done = store.jobs(None, 10).await.unwrap().remove(0);
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.attempts, 1);

    let _ = stop.send(true);
    for task in tasks {
        task.await.unwrap();
    }
}
