//! Locating (and, as root, installing) the PostgreSQL programs and running them.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Directory under which Debian installs one `<major>/bin` per PostgreSQL version.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// Debian package that provides the server programs.
const PACKAGE: &str = "postgresql";

/// PostgreSQL programs of one installed version and the account they run as.
#[derive(Debug)]
pub(crate) struct Binaries {
    bin_dir: PathBuf,
    /// Account for the server programs: `postgres` when this process is root,
    /// because PostgreSQL refuses to run as root, and `None` (the current
    /// user) otherwise.
    server_user: Option<SystemUser>,
}

#[derive(Debug, Clone)]
pub(crate) struct SystemUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Returns the programs of the highest installed PostgreSQL version.
///
/// The first call in a process installs the `postgresql` package when no
/// version is installed and the process runs as root. Concurrent callers wait
/// for that call, and every later call returns its result.
pub(crate) fn binaries() -> io::Result<&'static Binaries> {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINARIES
        .get_or_init(locate_or_install)
        .as_ref()
        .map_err(|message| io::Error::other(message.clone()))
}

impl Binaries {
    /// Builds a command for a server program (`initdb`, `pg_ctl`,
    /// `pg_basebackup`) that runs as the server account.
    pub(crate) fn server_command(&self, program: &str) -> Command {
        let mut command = match &self.server_user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", &user.name, "--"]);
                command.arg(self.bin_dir.join(program));
                command
            }
            None => Command::new(self.bin_dir.join(program)),
        };
        prepare(&mut command);
        command
    }

    /// Builds a `psql` command that runs as the current user. It connects over
    /// TCP as the `postgres` database role, which needs no password because
    /// every cluster uses `trust` authentication.
    pub(crate) fn psql_command(&self) -> Command {
        let mut command = Command::new(self.bin_dir.join("psql"));
        prepare(&mut command);
        command
    }

    /// Returns the command line prefix that runs `pg_ctl` as the server
    /// account, for the reaper's shell script.
    pub(crate) fn pg_ctl_argv(&self) -> Vec<String> {
        let pg_ctl = self.bin_dir.join("pg_ctl").display().to_string();
        match &self.server_user {
            Some(user) => vec![
                "runuser".to_string(),
                "-u".to_string(),
                user.name.clone(),
                "--".to_string(),
                pg_ctl,
            ],
            None => vec![pg_ctl],
        }
    }

    /// Makes `path` owned by the server account, so that the server programs
    /// can write into it. Does nothing when they run as the current user.
    pub(crate) fn give_to_server_user(&self, path: &Path) -> io::Result<()> {
        match &self.server_user {
            Some(user) => {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!(
                            "failed to change the owner of {} to {}: {error}",
                            path.display(),
                            user.name
                        ),
                    )
                })
            }
            None => Ok(()),
        }
    }

    /// Returns whether the server programs run as another account than this
    /// process (true when this process is root).
    pub(crate) fn runs_as_other_user(&self) -> bool {
        self.server_user.is_some()
    }
}

/// Runs `command` and returns its trimmed standard output. The error names
/// `description` and contains the exit status and standard error.
pub(crate) fn run(command: &mut Command, description: &str) -> io::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("failed to run {description}: {error}"),
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!(
            "{description} failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Clears the libpq environment variables (`PGHOST`, `PGPORT`, `PGOPTIONS`
/// and the like) so that only the explicit arguments choose the server, and
/// runs the command from `/`, which the server account can always enter.
fn prepare(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"PG") {
            command.env_remove(name);
        }
    }
    command.current_dir("/");
}

fn locate_or_install() -> Result<Binaries, String> {
    // SAFETY: geteuid(2) takes no arguments and always succeeds.
    let is_root = unsafe { libc::geteuid() } == 0;
    let bin_dir = match find_bin_dir() {
        Some(bin_dir) => bin_dir,
        None if is_root => {
            install_package(PACKAGE, "the PostgreSQL test clusters")?;
            find_bin_dir().ok_or_else(|| {
                format!(
                    "installed the `{PACKAGE}` package, but found no {INSTALL_ROOT}/<major>/bin/initdb"
                )
            })?
        }
        None => {
            return Err(format!(
                "PostgreSQL server programs not found: no {INSTALL_ROOT}/<major>/bin/initdb. \
                 Install the Debian package `{PACKAGE}` (`sudo apt-get install {PACKAGE}` \
                 or scripts/install-deps), then run the tests again"
            ))
        }
    };
    let server_user = if is_root {
        Some(lookup_user("postgres").ok_or_else(|| {
            "this process runs as root, which PostgreSQL rejects, and the `postgres` \
             system user to run it as is missing; install the Debian package `postgresql` \
             or run the tests as an ordinary user"
                .to_string()
        })?)
    } else {
        None
    };
    Ok(Binaries {
        bin_dir,
        server_user,
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    find_bin_dir_in(Path::new(INSTALL_ROOT))
}

/// Returns `install_root/<major>/bin` of the highest major version that has
/// `initdb`.
fn find_bin_dir_in(install_root: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(install_root).ok()?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin_dir = entry.path().join("bin");
            bin_dir.join("initdb").is_file().then_some((major, bin_dir))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin_dir)| bin_dir)
}

/// Installs the Debian package `package`, which `purpose` needs, with
/// `apt-get`. A first failure is taken as stale package lists, so the lists
/// are updated and the install tried once more.
pub(crate) fn install_package(package: &str, purpose: &str) -> Result<(), String> {
    let install = || {
        let mut command = Command::new("apt-get");
        command
            .args([
                "install",
                "-y",
                "-q",
                "-o",
                "DPkg::Lock::Timeout=300",
                package,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command, &format!("apt-get install {package}"))
    };
    if install().is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"]);
    run(&mut update, "apt-get update").map_err(|error| error.to_string())?;
    install()
        .map(|_| ())
        .map_err(|error| format!("failed to install {package}, which {purpose} need: {error}"))
}

/// Looks up a system user with `getpwnam_r`.
fn lookup_user(name: &str) -> Option<SystemUser> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local that outlives the call, and
    // `buffer.len()` is the buffer's true size.
    let status = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string in `buffer`.
    let name = unsafe { CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(SystemUser {
        name,
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_version(root: &Path, major: &str, with_initdb: bool) {
        let bin_dir = root.join(major).join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        if with_initdb {
            fs::write(bin_dir.join("initdb"), "").unwrap();
        }
    }

    #[test]
    fn find_bin_dir_picks_highest_major() {
        let root = tempfile::tempdir().unwrap();
        add_version(root.path(), "9", true);
        add_version(root.path(), "15", true);
        add_version(root.path(), "13", true);
        assert_eq!(
            find_bin_dir_in(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }

    #[test]
    fn find_bin_dir_skips_versions_without_initdb() {
        let root = tempfile::tempdir().unwrap();
        add_version(root.path(), "14", true);
        add_version(root.path(), "16", false);
        add_version(root.path(), "common", true);
        assert_eq!(
            find_bin_dir_in(root.path()),
            Some(root.path().join("14").join("bin"))
        );
    }

    #[test]
    fn find_bin_dir_returns_none_without_install() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_bin_dir_in(&root.path().join("missing")), None);
    }
}
