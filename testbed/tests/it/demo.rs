//! `attestmesh-testbed demo` as a user runs it: the binary, in the background, with a node's
//! agent killed while it stays up.
//!
//! Needs root and /dev/net/tun (the demo says which is missing), and the `cluster-mesh-agent`
//! and `attestmesh-indexer` binaries beside this crate's binary: `cargo nextest run --workspace`
//! builds them; with `-p attestmesh-testbed` alone, build them first
//! (`cargo build -p cluster-mesh-agent -p attestmesh-indexer`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bounds the whole test, so a hung demo fails with its output (and is stopped) well before
/// nextest's 300 s limit. Not a performance assertion: the run takes about a minute.
const BUDGET: Duration = Duration::from_secs(240);

/// The demo process, its output line by line, and everything it printed so far (for failure
/// messages). Dropped while running (a failed test), it is interrupted like Ctrl-C, so it still
/// stops its agents, anvil and alto and deletes its namespaces.
struct Demo {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    deadline: Instant,
}

impl Demo {
    fn start(state_dir: &Path, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-testbed"))
            .arg("demo")
            .args(args)
            .arg("--state-dir")
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("demo| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            deadline: Instant::now() + BUDGET,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// The next line of output `matches` accepts (lines before it are passed over).
    async fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        loop {
            match tokio::time::timeout_at(self.deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "the demo's output ended (exit {:?}) before {what}; it printed:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "no {what} within the test's {BUDGET:?}; the demo printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGINT (Ctrl-C), and its exit status.
    async fn interrupt(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), "-INT");
        tokio::time::timeout_at(self.deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the demo did not exit after SIGINT; it printed:\n{}",
                    self.seen.join("\n")
                )
            })
            .unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let Some(pid) = self.child.id() else { return };
        signal(pid, "-INT");
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(pid, "-KILL");
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// `N` of a `[demo] <node> runs as pid N (...)` line.
fn pid_in(line: &str) -> u32 {
    line.split("runs as pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Whether `pid` still runs (a zombie, dead and waiting to be reaped, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z'))
    })
}

/// The demo behaves like a cluster, not a script: `kill -9` of node-2's agent while it stays up
/// is reported, node-1 marks it down (0 live peers), `restart node-2` in the control file brings
/// it back until node-1 sees it live again, and Ctrl-C still exits 0 leaving no namespace, no
/// agent and only logs behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_survives_a_killed_node_and_restarts_it_from_the_control_file() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("demo");
    let mut demo = Demo::start(&state_dir, &["--nodes", "2", "--timeout-secs", "180"]);

    demo.wait_for("the devnet up, bundling through alto (the default)", |l| {
        l.starts_with("[demo] devnet up")
            && l.contains("nodes bundle through the real @pimlico/alto")
    })
    .await;
    demo.wait_for("every node healthy", |l| {
        l.starts_with("[demo] all 2 node(s) healthy")
    })
    .await;
    let node_1 = pid_in(
        &demo
            .wait_for("node-1's pid", |l| {
                l.starts_with("[demo] node-1 runs as pid")
            })
            .await,
    );
    let node_2 = pid_in(
        &demo
            .wait_for("node-2's pid", |l| {
                l.starts_with("[demo] node-2 runs as pid")
            })
            .await,
    );
    let control = state_dir.join("control");
    let how = demo
        .wait_for("how to restart a node", |l| l.contains("restart node-<n>"))
        .await;
    assert!(
        how.contains(
            &std::fs::canonicalize(&state_dir)
                .unwrap()
                .join("control")
                .display()
                .to_string()
        ),
        "the control file is named: {how}"
    );

    signal(node_2, "-9");
    let gone = demo
        .wait_for("node-2 reported gone", |l| {
            l.starts_with("[demo] node-2 is gone")
        })
        .await;
    assert!(
        gone.contains("signal: 9"),
        "the exit status is given: {gone}"
    );
    demo.wait_for("node-1 marking node-2 down", |l| {
        l.contains("node-1") && l.contains("(0 live peer(s))")
    })
    .await;

    std::fs::write(&control, "restart node-2\n").unwrap();
    let restarted = demo
        .wait_for("node-2 restarted", |l| {
            l.starts_with("[demo] restarting node-2: pid")
        })
        .await;
    demo.wait_for("node-2 rejoined", |l| {
        l.starts_with("[demo] node-2 rejoined")
    })
    .await;
    assert!(!control.exists(), "the control file was consumed");
    let node_2_again: u32 = restarted
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {restarted:?}"));

    let demo_pid = demo.pid();
    let status = demo.interrupt().await;
    assert!(
        status.success(),
        "Ctrl-C exits 0 ({status}); the demo printed:\n{}",
        demo.seen.join("\n")
    );
    // The demo sends SIGKILL as it drops its agents and does not wait: give them a moment.
    for pid in [node_1, node_2_again] {
        while running(pid) {
            assert!(
                Instant::now() < demo.deadline,
                "agent {pid} still runs after the demo exited"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ours = format!("am{demo_pid:x}-");
    // No /run/netns means no namespace at all; any other failure to read it must not pass as
    // "nothing leaked".
    let leaked: Vec<String> = match std::fs::read_dir("/run/netns") {
        Ok(entries) => entries
            .map(|e| {
                e.expect("a /run/netns entry reads")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.starts_with(&ours))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot read /run/netns to check for leaked namespaces: {error}"),
    };
    assert!(leaked.is_empty(), "the demo left namespaces: {leaked:?}");
    let left: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|name| name.ends_with(".log")),
        "only logs remain: {left:?}"
    );
    assert!(
        left.iter().any(|name| name.starts_with("alto")),
        "alto's log is kept with the others: {left:?}"
    );
}
