//! A private, throwaway Postgres cluster: `initdb` and `pg_ctl` on a free port in a
//! temporary directory, deleted on drop. Benchmarks and tests that restart or crash the
//! server use one, so the shared server is never touched. As root (initdb refuses root) the
//! cluster is created and run as the user `postgres`, like `scripts/pg-env.sh` does.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;

use crate::db::{self, DatabaseConfig};

/// A running (or stopped) private cluster. Dropping it stops the server and deletes it.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Creates the cluster (`initdb -A trust -U postgres`) and starts it. Blocks for a few
    /// seconds: call it from `spawn_blocking` in async code.
    pub fn start_new() -> anyhow::Result<Self> {
        let bin = find_bin_dir().context(
            "the Postgres server binaries (initdb, pg_ctl) are not installed or not on PATH",
        )?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("genq-pg.")
            .tempdir_in(if as_postgres {
                PathBuf::from("/tmp")
            } else {
                std::env::temp_dir()
            })?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()))
                .context("cannot hand the cluster directory to the user postgres")?;
        }
        let port = free_port()?;
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data_dir();
        cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    path_str(&data)?,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .context("initdb failed")?;
        cluster.start()?;
        Ok(cluster)
    }

    /// The superuser URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on (the same after every restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server and waits until it accepts connections (after a crash, until
    /// recovery is done).
    pub fn start(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c fsync=off",
            self.port,
            path_str(self.dir.path())?
        );
        self.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )
        .with_context(|| format!("the private cluster did not start (log: {})", log.display()))
    }

    /// Stops the server in immediate mode: every backend is killed at once and the next
    /// start runs crash recovery, as after a power cut of the database host.
    pub fn crash(&self) -> anyhow::Result<()> {
        self.stop("immediate")
    }

    /// Stops the server with `pg_ctl stop -m <mode>` (`smart`, `fast` or `immediate`).
    pub fn stop(&self, mode: &str) -> anyhow::Result<()> {
        let data = self.data_dir();
        self.pg(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", mode, "-w", "stop"],
        )
        .context("pg_ctl stop failed")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).current_dir("/");
        run(&mut cmd)
    }
}

/// Runs `body` on a fresh private cluster, migrated, with connection options made from
/// `database` (genq's session settings); the cluster is stopped and deleted afterwards
/// whatever `body` returned. The benchmarks that restart or crash Postgres run this way.
pub async fn with_migrated<T, F, Fut>(database: &DatabaseConfig, body: F) -> anyhow::Result<T>
where
    F: FnOnce(Arc<PgCluster>, PgConnectOptions) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let cluster = Arc::new(tokio::task::spawn_blocking(PgCluster::start_new).await??);
    let options = db::connect_options(&cluster.url(), database)?;
    db::migrate(&options, "")
        .await
        .context("cannot migrate the private cluster")?;
    let result = body(cluster.clone(), options).await;
    // Dropping the last handle stops the server and deletes it (blocking).
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{:?} exited with {status}: {}{}",
            cmd.get_program(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temporary directory path is not UTF-8")
}

/// Whether this process runs as root (the owner of `/proc/self`, Linux).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu keep them off PATH).
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_crash_and_restarts_on_the_same_port() {
        let cluster = PgCluster::start_new().expect("private cluster");
        let port = cluster.port();
        cluster.crash().unwrap();
        cluster.start().unwrap();
        assert_eq!(cluster.port(), port);
        assert!(cluster.url().ends_with(&format!(":{port}/postgres")));
        let dir = cluster.dir.path().to_path_buf();
        drop(cluster);
        assert!(!dir.exists(), "the cluster directory is deleted on drop");
    }
}
