//! The chaos suite's daemons: `genq run` processes of the real binary, each with its own
//! HTTP port (its webhook endpoint, handed to providers as the callback base), killed with
//! SIGKILL at random and started again on the same port, so a provider's webhook retries
//! reach the daemon that replaced the dead one. Each process logs (warnings and worse) to
//! `daemon-N.log` in the suite's directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// One daemon slot: a port and the process serving it, if any.
struct Slot {
    port: u16,
    child: Option<Child>,
}

/// The running daemons.
pub struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    slots: Vec<Slot>,
    /// Processes started, first starts included.
    pub spawned: u32,
    /// Processes found dead without having been killed (they exited by themselves).
    pub exited: u32,
}

impl Fleet {
    /// Starts `n` daemons of `exe` with `env`, logging into `dir`.
    pub fn start(
        exe: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
        n: usize,
    ) -> anyhow::Result<Self> {
        let mut fleet = Self {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            env,
            slots: Vec::new(),
            spawned: 0,
            exited: 0,
        };
        for _ in 0..n {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            fleet.slots.push(Slot { port, child: None });
        }
        for i in 0..n {
            fleet.spawn(i)?;
        }
        Ok(fleet)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let port = self.slots[i].port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("daemon-{i}.log")))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("run")
            .env("GENQ_HTTP_BIND", format!("127.0.0.1:{port}"))
            .env(
                "GENQ_PROVIDERS_WEBHOOK_BASE_URL",
                format!("http://127.0.0.1:{port}"),
            )
            .env("GENQ_WORKER_ID", format!("chaos-{i}-{}", self.spawned))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        self.slots[i].child = Some(child);
        self.spawned += 1;
        Ok(())
    }

    /// SIGKILLs daemon `i` (no drain, no hand-back: leases and in-flight calls are left
    /// as they are) and starts a new process in its slot.
    pub fn kill_and_respawn(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.slots[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(i)
    }

    /// Starts a new process in every slot whose process exited by itself; how many.
    pub fn respawn_exited(&mut self) -> anyhow::Result<u32> {
        let mut n = 0;
        for i in 0..self.slots.len() {
            let gone = match self.slots[i].child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if gone {
                self.exited += 1;
                n += 1;
                self.spawn(i)?;
            }
        }
        Ok(n)
    }

    /// SIGTERM to every daemon (a graceful drain), then SIGKILL to any still running
    /// after `grace`. Returns how many exited with status 0.
    pub async fn stop(&mut self, grace: Duration) -> u32 {
        for slot in &self.slots {
            if let Some(child) = &slot.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + grace;
        let mut clean = 0;
        for slot in &mut self.slots {
            let Some(mut child) = slot.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        clean += u32::from(status.success());
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        clean
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
