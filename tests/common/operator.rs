//! The operator binary as a child process of a test, for the suites that
//! start operators of their own (tests/restarts.rs, tests/fairness.rs):
//! tests/run-cluster-tests.sh runs them when no other operator runs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::eventually;

/// An operator process on 127.0.0.1:`port`, killed on drop.
pub struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    /// Starts the operator on 127.0.0.1:`port` with `args` after the usual
    /// ones, its output appended to `target/it/<log>` (JSON), and waits
    /// until it listens. Points `LCO_METRICS_URL` (what `Ns::new` and the
    /// metric helpers read) at it.
    pub async fn start(port: u16, log: &str, args: &[&str]) -> Operator {
        let path = format!("{}/target/it/{log}", env!("CARGO_MANIFEST_DIR"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("operator log {path} opens: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_lifecycle-operator"))
            .args([
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            .args(args)
            .env(
                "KUBECONFIG",
                std::env::var("KUBECONFIG").unwrap_or_else(|_| {
                    concat!(env!("CARGO_MANIFEST_DIR"), "/target/cluster/kubeconfig").into()
                }),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("operator starts");
        let mut op = Operator { child, port };
        // SAFETY: set before any other thread of this test reads the environment.
        unsafe { std::env::set_var("LCO_METRICS_URL", op.metrics_url()) };
        eventually("operator ready", 60, || {
            if let Some(status) = op.child.try_wait().ok().flatten() {
                panic!("the operator exited at startup ({status}); see {path}");
            }
            async move {
                match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("not listening: {e}")),
                }
            }
        })
        .await;
        op
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// Its metrics text.
    pub async fn metrics(&self) -> String {
        super::http_get(&self.metrics_url()).await
    }

    /// Sends `signal` and waits for the exit; returns how long it took.
    pub async fn stop(mut self, signal: &str) -> Duration {
        let t0 = Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "operator ignored {signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
