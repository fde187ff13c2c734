//! A throwaway PostgreSQL cluster per test: `initdb` and `pg_ctl` from the machine's PostgreSQL
//! (Debian: /usr/lib/postgresql/<version>/bin, which `.ci/run` installs), in a temp dir,
//! listening only on a unix socket in that dir, stopped when dropped. As root (CI), the server
//! runs as the `postgres` user, since `initdb` refuses to run as root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// Whether the server flushes to disk: off for tests (speed), on for benchmarks (the
    /// figures are for a server as users run it).
    durable: bool,
    /// The superuser's password, for a cluster that asks for one (SCRAM-SHA-256).
    password: Option<String>,
}

/// The port only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
const PORT: u16 = 5432;

impl PgCluster {
    /// A started cluster, or `None` (printing SKIPPED) where PostgreSQL is not installed and
    /// this is not CI; under `CI` a missing PostgreSQL fails the test.
    pub fn start() -> Option<PgCluster> {
        let bin = installed_bindir()?;
        Some(Self::launch(bin, false, None))
    }

    /// A started cluster whose superuser has `password` and which asks every client for it by
    /// `method`, pg_hba.conf's: `scram-sha-256`, `md5` (the password stored as an MD5 hash, so
    /// that the server asks for MD5 rather than SCRAM) or `password` (cleartext); or `None` as
    /// [`PgCluster::start`].
    pub fn start_with_password(password: &str, method: &str) -> Option<PgCluster> {
        let bin = installed_bindir()?;
        let cluster = Self::launch(bin, false, Some((password, method)));
        if method == "md5" {
            let escaped = password.replace('\'', "''");
            cluster.psql(&format!(
                "SET password_encryption = 'md5'; ALTER ROLE postgres PASSWORD '{escaped}'"
            ));
        }
        Some(cluster)
    }

    /// A started cluster that syncs to disk (for benchmarks), or `None` without PostgreSQL.
    pub fn start_durable() -> Option<PgCluster> {
        Some(Self::launch(find_bindir()?, true, None))
    }

    fn launch(bin: PathBuf, durable: bool, auth: Option<(&str, &str)>) -> PgCluster {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        let pwfile = dir.path().join("pwfile");
        let password = auth.map(|(password, _)| password);
        if let Some(password) = password {
            std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        }
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster dir to postgres");
        }
        let cluster = PgCluster {
            dir,
            bin,
            as_postgres,
            durable,
            password: password.map(str::to_string),
        };
        let data = cluster.data();
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ];
        if let Some((_, method)) = auth {
            args.extend(["-A", method, &pwfile_arg]);
        } else {
            args.extend(["-A", "trust"]);
        }
        cluster.pg("initdb", &args);
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's main process, from the first line of `postmaster.pid`.
    pub fn postmaster_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `postgres` as the superuser, over the unix socket.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of `database` as the superuser, over the unix socket.
    pub fn url_of(&self, database: &str) -> String {
        let host = self.socket_dir().to_str().unwrap().replace('/', "%2F");
        let password = self
            .password
            .as_ref()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!("postgresql://postgres{password}@{host}:{PORT}/{database}")
    }

    /// Stops the server (fast shutdown: sessions are cut, as when a server restarts).
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    pub fn start_server(&self) {
        let fsync = if self.durable { "on" } else { "off" };
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {PORT} -c fsync={fsync} -c max_connections=100",
            self.socket_dir().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Runs SQL through psql when it is there; tests that need it say so.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_at(&self.url(), sql)
    }

    /// psql's path, for tests that run it themselves.
    pub fn psql_bin(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// Runs SQL through psql connected to `url` (or any libpq connection string).
    pub fn psql_at(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .args(["-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("the PostgreSQL tool runs");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            cmd
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// Where PostgreSQL's programs are, or `None` (printing SKIPPED) where it is not installed and
/// this is not CI; under `CI` a missing PostgreSQL fails the test.
fn installed_bindir() -> Option<PathBuf> {
    let bin = find_bindir();
    if bin.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL's initdb is not installed; .ci/run installs the postgresql package"
        );
        eprintln!("SKIPPED: PostgreSQL's initdb and pg_ctl are not installed");
    }
    bin
}

/// Debian's layout first (the highest version), then whatever `initdb` is on PATH.
fn find_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}
