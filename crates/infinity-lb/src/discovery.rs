//! Backend discovery from the command line and from a backends file that may
//! change at run time.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Context as _;
use async_trait::async_trait;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

/// Parses a backends file: one `IP:PORT` per line, with blank lines and text
/// after `#` ignored.
pub fn parse_backends(text: &str) -> anyhow::Result<BTreeSet<SocketAddr>> {
    let mut backends = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let address = content.parse::<SocketAddr>().with_context(|| {
            format!(
                "line {}: invalid backend address {content:?}, expected IP:PORT",
                index + 1
            )
        })?;
        backends.insert(address);
    }
    Ok(backends)
}

/// Reads and parses a backends file.
pub fn read_backends_file(path: &Path) -> anyhow::Result<BTreeSet<SocketAddr>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read backends file {}", path.display()))?;
    parse_backends(&text).with_context(|| format!("invalid backends file {}", path.display()))
}

/// File identity used to notice a changed backends file without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: SystemTime,
    len: u64,
}

fn file_version(path: &Path) -> std::io::Result<FileVersion> {
    let metadata = std::fs::metadata(path)?;
    Ok(FileVersion {
        modified: metadata.modified()?,
        len: metadata.len(),
    })
}

struct FileState {
    version: Option<FileVersion>,
    backends: BTreeSet<SocketAddr>,
}

/// Service discovery that merges the `--backend` addresses with the lines of
/// the backends file. Pingora calls [`ServiceDiscovery::discover`] once at
/// start and then every update interval. The file is re-read only when its
/// modification time or length changed.
pub struct BackendDiscovery {
    fixed: BTreeSet<SocketAddr>,
    file: Option<PathBuf>,
    file_state: Mutex<FileState>,
    /// The set returned by the previous call, to log additions and removals.
    current: Mutex<BTreeSet<SocketAddr>>,
}

impl BackendDiscovery {
    /// Creates the discovery and reads the backends file once, so that an
    /// unreadable or invalid file fails start-up.
    pub fn new(fixed: &[SocketAddr], file: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut file_state = FileState {
            version: None,
            backends: BTreeSet::new(),
        };
        if let Some(path) = &file {
            file_state.version = Some(
                file_version(path)
                    .with_context(|| format!("failed to read backends file {}", path.display()))?,
            );
            file_state.backends = read_backends_file(path)?;
        }
        Ok(Self {
            fixed: fixed.iter().copied().collect(),
            file,
            file_state: Mutex::new(file_state),
            current: Mutex::new(BTreeSet::new()),
        })
    }

    /// Returns the backends from both sources as they were last read.
    pub fn backends(&self) -> BTreeSet<SocketAddr> {
        let state = self.file_state.lock().expect("file state lock");
        self.fixed.union(&state.backends).copied().collect()
    }

    /// Re-reads the backends file if it changed. A file that cannot be read
    /// or parsed leaves the previous backends in place.
    fn refresh_file(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let mut state = self.file_state.lock().expect("file state lock");
        let version = match file_version(path) {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error,
                    "failed to read backends file, keeping the previous backends");
                return;
            }
        };
        if state.version == Some(version) {
            return;
        }
        match read_backends_file(path) {
            Ok(backends) => {
                state.version = Some(version);
                state.backends = backends;
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), error = format!("{error:#}"),
                    "ignoring backends file, keeping the previous backends");
                // Remember the version so that the same broken file is
                // reported once, not on every poll.
                state.version = Some(version);
            }
        }
    }

    /// Logs the backends added and removed since the previous call.
    fn log_changes(&self, backends: &BTreeSet<SocketAddr>) {
        let mut current = self.current.lock().expect("current backends lock");
        for added in backends.difference(&current) {
            tracing::info!(backend = %added, "backend added");
        }
        for removed in current.difference(backends) {
            tracing::info!(backend = %removed, "backend removed");
        }
        *current = backends.clone();
    }
}

#[async_trait]
impl ServiceDiscovery for BackendDiscovery {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        self.refresh_file();
        let addresses = self.backends();
        self.log_changes(&addresses);
        let backends = addresses
            .iter()
            .map(|address| Backend::new(&address.to_string()))
            .collect::<pingora_core::Result<BTreeSet<_>>>()?;
        // An empty map leaves every backend enabled.
        // NOTE: Pingora marks a new backend healthy until its health checks
        // fail, so an added backend takes requests before its first check.
        Ok((backends, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_and_blanks() {
        let text = "# nodes\n127.0.0.1:3001\n\n  127.0.0.1:3002  # second\n[::1]:3003\n";
        let backends = parse_backends(text).unwrap();
        let expected: BTreeSet<SocketAddr> = ["127.0.0.1:3001", "127.0.0.1:3002", "[::1]:3003"]
            .iter()
            .map(|address| address.parse().unwrap())
            .collect();
        assert_eq!(backends, expected);
    }

    #[test]
    fn parse_rejects_invalid_line() {
        let error = parse_backends("127.0.0.1:3001\nlocalhost:3002\n").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("line 2"), "message: {message}");
        assert!(message.contains("localhost:3002"), "message: {message}");
    }
}
