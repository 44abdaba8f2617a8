//! A real PgBouncer (Debian's `pgbouncer`, 1.18 on bookworm) in front of the test's Postgres,
//! from an ini and a userlist written to a temporary directory. Its pool is tiny, so server
//! connections really are shared between client connections.
//!
//! Without the binary a test skips with a message, except in CI (`CI` set), where `.ci/run`
//! installs it and a missing binary fails the test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct PgBouncer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// The pgbouncer binary: on PATH, or where Debian puts it (`/usr/sbin`).
fn binary() -> Option<String> {
    ["pgbouncer", "/usr/sbin/pgbouncer"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

impl PgBouncer {
    /// Starts PgBouncer in `pool_mode` with `pool_size` server connections per database, in
    /// front of the server `direct_url` names. `None` when the binary is absent outside CI.
    pub async fn start(direct_url: &str, pool_mode: &str, pool_size: u32) -> Option<Self> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "pgbouncer is not installed (CI must run the pooler tests: .ci/run installs it)"
            );
            eprintln!(
                "\n*** SKIPPED: pooler test needs pgbouncer (apt-get install pgbouncer) ***\n"
            );
            return None;
        };
        let url = url::Url::parse(direct_url).expect("database URL");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let user = url.username();
        let password = url.password().unwrap_or("");
        let auth_type = if password.is_empty() { "trust" } else { "md5" };
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{user}\" \"{password}\"\n"),
        )
        .unwrap();
        let ini = format!(
            "[databases]\n\
             * = host={host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = {auth_type}\n\
             auth_file = {dir}/userlist.txt\n\
             logfile = {dir}/pgbouncer.log\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 500\n",
            host = url.host_str().unwrap_or("127.0.0.1"),
            pg_port = url.port().unwrap_or(5432),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
        let mut cmd = Command::new(bin);
        // PgBouncer refuses to run as root; it drops to `nobody`, who must reach the files.
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pgbouncer");
        let me = Self { child, dir, port };
        wait_until(Duration::from_secs(10), "pgbouncer to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Some(me)
    }

    /// `direct_url` pointed at this PgBouncer instead.
    pub fn url(&self, direct_url: &str) -> String {
        let mut url = url::Url::parse(direct_url).expect("database URL");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    /// PgBouncer's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
