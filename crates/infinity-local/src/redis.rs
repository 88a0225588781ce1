//! A private Redis server on loopback, started from the installed
//! `redis-server`, for tests that must stop and restart it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::process::{is_port_free, pick_free_port, wait_until};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` that keeps nothing on disk, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers
    /// `PING`. Fails with a message naming the Debian package when
    /// `redis-server` is missing.
    pub fn start() -> io::Result<Self> {
        let server = Self {
            port: pick_free_port()?,
            dir: tempfile::Builder::new()
                .prefix("infinity-redis-")
                .tempdir()?,
            child: Mutex::new(None),
        };
        server.run()?;
        Ok(server)
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The folder the server runs in, with its log.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn run(&self) -> io::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting redis-server failed: {e}; install the Debian package redis-server"),
                )
            })?;
        *self.child.lock().unwrap() = Some(child);
        wait_until(START_TIMEOUT, "redis-server answers PING", || {
            Ok(self.ping().is_ok())
        })
    }

    /// Sends `PING` and checks for `+PONG`.
    pub fn ping(&self) -> io::Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        if &reply != b"+PONG\r\n" {
            return Err(io::Error::other(format!(
                "unexpected PING reply {:?}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits until its port is free. Every
    /// key is lost, as after a crash of a server that keeps nothing on disk.
    pub fn kill(&self) -> io::Result<()> {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.kill()?;
            child.wait()?;
        }
        wait_until(START_TIMEOUT, "the Redis port is free", || {
            Ok(is_port_free(self.port))
        })
    }

    /// Stops the server with SIGSTOP. Its connections stay open, but it
    /// replies to nothing until [`RedisServer::thaw`].
    pub fn freeze(&self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a frozen server run again with SIGCONT.
    pub fn thaw(&self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let child = self.child.lock().unwrap();
        let child = child
            .as_ref()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) with a pid this server spawned and has not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&self) -> io::Result<()> {
        self.run()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
