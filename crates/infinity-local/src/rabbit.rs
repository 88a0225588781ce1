//! A private RabbitMQ node on loopback, started from the installed
//! `rabbitmq-server`, for tests that must kill and restart the broker.
//!
//! The node has its own name (`infinity-PORT@localhost`), data, logs,
//! configuration, Erlang cookie (its `HOME` is the temporary folder) and its
//! own `epmd` on a free port, so it neither registers with nor talks to the
//! machine's own RabbitMQ node. No plugin is enabled.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::binaries::install_package;
use crate::process::{is_port_free, pick_free_port, wait_until};

/// The server script of Debian's `rabbitmq-server` package. The one in
/// `/usr/sbin` switches to the `rabbitmq` user and redirects the output to
/// `/var/log/rabbitmq`, which a private node must not share.
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const PACKAGE: &str = "rabbitmq-server";
/// Boot takes about 6 s on an idle two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The user and password of the default account, which RabbitMQ accepts
/// only from loopback.
const CREDENTIALS: &str = "guest:guest";

/// The cleanup script: arguments are the test process id, the folder, and
/// the epmd process id. It waits for the test process to end, then kills the
/// node whose id is in the pid file and the epmd, and removes the folder. It
/// exits early when the folder disappears, which is how a dropped server
/// ends it.
const REAPER: &str = r#"
test_pid=$1
dir=$2
epmd_pid=$3
while kill -0 "$test_pid" 2>/dev/null && [ -d "$dir" ]; do
  sleep 1
done
[ -d "$dir" ] || exit 0
[ -f "$dir/rabbit.pid" ] && kill -9 "$(cat "$dir/rabbit.pid")" 2>/dev/null
kill -9 "$epmd_pid" 2>/dev/null
sleep 1
rm -rf "$dir"
"#;

/// A private `rabbitmq-server`, killed when dropped.
#[derive(Debug)]
pub struct RabbitServer {
    /// The AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
    epmd: Mutex<Option<Child>>,
    /// The `rabbitmq-server` script, whose child is the Erlang VM.
    script: Mutex<Option<Child>>,
    reaper: Mutex<Option<Child>>,
}

impl RabbitServer {
    /// Starts a node on free loopback ports and waits until it answers the
    /// AMQP handshake. As root, installs the Debian package when the server
    /// is missing.
    pub fn start() -> io::Result<Self> {
        ensure_installed()?;
        let server = Self {
            port: pick_free_port()?,
            dist_port: pick_free_port()?,
            epmd_port: pick_free_port()?,
            dir: tempfile::Builder::new()
                .prefix("infinity-rabbit-")
                .tempdir()?,
            epmd: Mutex::new(None),
            script: Mutex::new(None),
            reaper: Mutex::new(None),
        };
        server.write_config()?;
        server.start_epmd()?;
        server.start_reaper()?;
        server.run()?;
        Ok(server)
    }

    /// Returns the URL clients connect to.
    pub fn url(&self) -> String {
        format!("amqp://{CREDENTIALS}@127.0.0.1:{}/%2f", self.port)
    }

    /// Returns the folder the node runs in, with its data and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self) -> io::Result<()> {
        std::fs::write(
            self.path("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\n\
                 log.console = false\n\
                 log.file.level = info\n\
                 # Tests write little; the default 50 MB free-disk alarm would\n\
                 # block publishers on a nearly full disk for no reason.\n\
                 disk_free_limit.absolute = 10MB\n",
                self.port
            ),
        )?;
        std::fs::write(self.path("enabled_plugins"), "[].\n")?;
        std::fs::write(self.path("rabbitmq-env.conf"), "")?;
        Ok(())
    }

    fn start_epmd(&self) -> io::Result<()> {
        let log = std::fs::File::create(self.path("epmd.log"))?;
        let child = Command::new("epmd")
            .args(["-address", "127.0.0.1", "-port"])
            .arg(self.epmd_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting epmd failed: {e}")))?;
        *self.epmd.lock().unwrap() = Some(child);
        Ok(())
    }

    fn start_reaper(&self) -> io::Result<()> {
        let epmd_pid = self.epmd.lock().unwrap().as_ref().map_or(0, Child::id);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(REAPER)
            .arg("infinity-rabbit-reaper")
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .arg(epmd_pid.to_string())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
        // parent, which is all that `pre_exec` allows between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        *self.reaper.lock().unwrap() = Some(command.spawn()?);
        Ok(())
    }

    /// Starts the node on the folder's data and waits until it is ready.
    fn run(&self) -> io::Result<()> {
        let _ = std::fs::remove_file(self.path("rabbit.pid"));
        let log = std::fs::File::create(self.path("server.log"))?;
        let home = self.dir.path();
        let child = Command::new(SERVER_SCRIPT)
            .env("HOME", home)
            .env("RABBITMQ_NODENAME", format!("infinity-{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", home.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", home.join("log"))
            .env("RABBITMQ_CONFIG_FILE", home.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", home.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", home.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", home.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", home.join("rabbit.pid"))
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting {SERVER_SCRIPT} failed: {e}; install the Debian package {PACKAGE}"),
                )
            })?;
        *self.script.lock().unwrap() = Some(child);
        wait_until(START_TIMEOUT, "RabbitMQ answers the AMQP handshake", || {
            if let Some(child) = self.script.lock().unwrap().as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "rabbitmq-server exited with {status}; see {}",
                        self.path("server.log").display()
                    )));
                }
            }
            Ok(self.handshake().is_ok())
        })
    }

    /// Sends the AMQP 0-9-1 protocol header and checks that the broker
    /// answers with a method frame (its `connection.start`).
    pub fn handshake(&self) -> io::Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"AMQP\x00\x00\x09\x01")?;
        let mut frame_type = [0u8; 1];
        stream.read_exact(&mut frame_type)?;
        if frame_type[0] != 1 {
            return Err(io::Error::other(format!(
                "unexpected AMQP frame type {}",
                frame_type[0]
            )));
        }
        Ok(())
    }

    /// Kills the node (SIGKILL to the Erlang VM) and waits until its ports
    /// are free. Messages that the broker confirmed survive on disk.
    pub fn kill(&self) -> io::Result<()> {
        if let Some(pid) = self.vm_pid() {
            // SAFETY: kill(2) only sends a signal; the pid is the VM this
            // server started, read from the pid file it wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // The script waits for the VM and reaps it when it dies, so let it
        // exit on its own, and kill it only when it does not.
        if let Some(mut script) = self.script.lock().unwrap().take() {
            let exited = wait_until(Duration::from_secs(10), "rabbitmq-server to exit", || {
                Ok(script.try_wait()?.is_some())
            });
            if exited.is_err() {
                let _ = script.kill();
            }
            script.wait()?;
        }
        wait_until(START_TIMEOUT, "the RabbitMQ ports are free", || {
            Ok(is_port_free(self.port) && is_port_free(self.dist_port))
        })
    }

    /// Starts the node again on the same ports and data.
    pub fn restart(&self) -> io::Result<()> {
        self.run()
    }

    /// Reads the process id of the Erlang VM from the pid file the node
    /// writes.
    fn vm_pid(&self) -> Option<i32> {
        read_pid(&self.path("rabbit.pid"))
    }

    /// Returns the process id of the node's Erlang VM while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.vm_pid().and_then(|pid| u32::try_from(pid).ok())
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some(mut epmd) = self.epmd.lock().unwrap().take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
        // The reaper exits once the folder is gone with the TempDir.
        if let Some(mut reaper) = self.reaper.lock().unwrap().take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

/// Returns a node shared by every test of this test binary, started on the
/// first call. Tests keep apart by queue-name prefix. The node is never
/// dropped, so its reaper stops it once the test process exits.
pub fn shared_rabbit() -> io::Result<&'static RabbitServer> {
    static SHARED: OnceLock<Result<RabbitServer, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| RabbitServer::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| io::Error::other(message.clone()))
}

/// Installs `rabbitmq-server` with apt-get when it is missing and this
/// process runs as root; the first call does the work for every caller.
fn ensure_installed() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            if Path::new(SERVER_SCRIPT).exists() {
                return Ok(());
            }
            // SAFETY: geteuid(2) takes no arguments and always succeeds.
            if unsafe { libc::geteuid() } != 0 {
                return Err(format!(
                    "{SERVER_SCRIPT} not found: install the Debian package {PACKAGE} \
                     (scripts/install-deps), then run the tests again"
                ));
            }
            install_package(PACKAGE, "the private RabbitMQ nodes")
        })
        .clone()
        .map_err(io::Error::other)
}
