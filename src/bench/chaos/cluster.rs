//! A private, throwaway Postgres cluster for the chaos suite: `initdb` in a temporary
//! directory, `pg_ctl start` on a free loopback port, so the suite can crash-restart its
//! database (`pg_ctl restart -m immediate`) without touching a server others use. The
//! same steps as `scripts/pg-env.sh`; as root (initdb refuses root) the cluster runs as
//! the user `postgres`. Stopped and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// A running private cluster.
pub struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish()
    }
}

/// A PostgreSQL program on PATH, else in the newest `/usr/lib/postgresql/*/bin`.
fn find(name: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versioned.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    on_path
        .into_iter()
        .chain(versioned.into_iter().rev())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found (install the PostgreSQL server: apt-get install postgresql)")
        })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Creates and starts a cluster allowing `max_connections`.
    pub async fn start(max_connections: u32) -> anyhow::Result<Self> {
        let initdb = find("initdb")?;
        let pg_ctl = find("pg_ctl")?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("genq-chaos-pg.")
            .tempdir_in("/tmp")?
            .keep();
        let cluster = Self {
            dir,
            pg_ctl,
            port: free_port()?,
            as_postgres,
        };
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(&cluster.dir),
                None,
            )?;
        }
        let data = cluster.data();
        let mut init = cluster.owner_command(&initdb);
        init.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(&mut init, None).context("initdb failed")?;
        // fsync off is safe here: a crash restart kills the server, not the machine, so
        // the kernel still holds every write. synchronous_commit stays on: off would lose
        // commits the daemons were told about, which no real deployment does.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections={max_connections} \
             -c fsync=off",
            cluster.port,
            cluster.dir.display()
        );
        let log = cluster.dir.join("postgres.log");
        let mut start = cluster.owner_command(&cluster.pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(&mut start, Some(&log)).context("pg_ctl start failed")?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crash-restarts the server (`pg_ctl restart -m immediate`): every connection is cut,
    /// uncommitted work is lost, and the server recovers from its WAL before answering.
    pub async fn crash_restart(&self) -> anyhow::Result<()> {
        let mut restart = self.owner_command(&self.pg_ctl);
        // -l again: without it the new server would write to (and hold open) our pipe.
        let log = self.dir.join("postgres.log");
        restart
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-m", "immediate", "-w", "-t", "60", "restart"]);
        tokio::task::spawn_blocking(move || run(&mut restart, Some(&log)))
            .await?
            .context("pg_ctl restart failed")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn owner_command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c.current_dir("/");
            c
        } else {
            Command::new(program)
        }
    }
}

/// Runs `cmd`; on failure the error carries its output and the end of the server `log`.
fn run(cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let log = log
        .and_then(|l| std::fs::read_to_string(l).ok())
        .unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    bail!(
        "{:?} exited with {}: {}{}\n{}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = self.owner_command(&self.pg_ctl);
        let _ = stop
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
