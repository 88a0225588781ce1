//! Local topologies: `infinity up FILE` starts PostgreSQL, Redis, RabbitMQ,
//! API nodes, worker processes and a load balancer on loopback as a TOML
//! file describes them,
//! `infinity status` checks them and `infinity down` stops them.
//!
//! `up` starts a supervisor in the background, which owns every process and
//! records them in `RUN/state.json`; the other commands read that file.

mod child;
mod commands;
mod file;
mod process;
mod state;
mod status;
mod supervisor;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub use commands::{down, status, up, DownArgs, StatusArgs, UpArgs};

use state::State;

/// The time limit of one health-check request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Returns the current time in RFC 3339, UTC, to the second.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Returns the HTTP client for health checks. It ignores the proxy
/// environment variables, because every address it calls is local.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(CHECK_TIMEOUT)
        .build()?)
}

/// Sends a RESP `PING` to the Redis server at `address` and returns the
/// first line of its reply, such as `+PONG`.
async fn redis_ping(address: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await?;
        Ok(reply.trim_end().to_string())
    };
    tokio::time::timeout(CHECK_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply within {} seconds", CHECK_TIMEOUT.as_secs()),
            ))
        })
}

/// Hides the password in a `scheme://user:password@host/...` URL.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &authority[..colon],
        &url[authority_start + at..]
    )
}

/// Renders what runs where: the public API URL first, then one line per
/// process, then how to check and stop the topology.
fn summary(state: &State) -> String {
    let mut text = format!(
        "Infinity topology serving {}\n",
        state.api_url.as_deref().unwrap_or("(no API URL recorded)")
    );
    for process in &state.processes {
        let mut line = format!("  {:<18}", process.name);
        if let Some(url) = &process.url {
            line.push_str(&format!(" {}", redact_url(url)));
        }
        if let Some(metrics) = &process.metrics_url {
            line.push_str(&format!("  metrics {metrics}"));
        }
        match (process.pid, process.external) {
            (_, true) => line.push_str("  (external, not started by this run)"),
            (Some(pid), false) => line.push_str(&format!("  pid {pid}")),
            (None, false) => {}
        }
        if let Some(log) = &process.log {
            line.push_str(&format!("  log {}", log.display()));
        }
        text.push_str(&line);
        text.push('\n');
    }
    let run_dir = state.run_dir.display();
    text.push_str(&format!(
        "Check it with `infinity status --run-dir {run_dir}` and stop it with `infinity down --run-dir {run_dir}`.\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password() {
        assert_eq!(
            redact_url("postgres://app:secret@db:5432/infinity"),
            "postgres://app:***@db:5432/infinity"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/infinity"),
            "postgres://postgres@127.0.0.1:5432/infinity"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6380"),
            "redis://127.0.0.1:6380"
        );
        assert_eq!(redact_url("http://a:b"), "http://a:b");
    }

    #[tokio::test]
    async fn redis_ping_reads_the_first_reply_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 14];
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut request)
                .await
                .unwrap();
            socket.write_all(b"+PONG\r\n").await.unwrap();
            request
        });
        assert_eq!(redis_ping(&address).await.unwrap(), "+PONG");
        assert_eq!(&server.await.unwrap(), b"*1\r\n$4\r\nPING\r\n");
    }
}
