//! Test hosts in network namespaces: one namespace per node, joined to the root namespace by a
//! veth pair, so that one test process can run several nodes, each with its own `attestmesh0`,
//! its own listeners and its own view of the network.
//!
//! * [`Netns::create`] makes `ip netns add <name>`, a veth pair (`<name>h` in the root namespace
//!   with the host address, `<name>n` moved into the namespace with the namespace address, both
//!   up, `lo` up in the namespace). A leftover of the same name (a killed earlier run) is deleted
//!   first. [`Netns::create_unique`] picks the name and a free /30 in `10.77.0.0/16` itself.
//! * [`Netns::run`] runs a future on a fresh OS thread that has entered the namespace
//!   (`setns(CLONE_NEWNET)` on `/var/run/netns/<name>`) with its own current-thread tokio runtime:
//!   every socket and TUN device that future creates lives in the namespace. Namespaces are per
//!   thread, so the caller's own thread and runtime stay where they were.
//! * [`Netns::exec`] builds `ip netns exec <name> <program>` for subprocesses.
//! * Dropping a [`Netns`] deletes the namespace and the host-side link **by name**; deleting the
//!   namespace also destroys the veth pair and every device inside it.
//!
//! Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `/dev/net/tun` for TUN devices
//! and iproute2's `ip`. [`require_privileges`] says precisely which of these is missing, so that a
//! test can fail with that message instead of passing without having run.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// `tracing` target of this module's log lines.
pub const LOG_TARGET: &str = "attestmesh::testbed::netns";

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Prefix of the names [`unique_name`] hands out; [`sweep_orphans`] only touches these.
const UNIQUE_PREFIX: &str = "am";

/// Longest namespace name: the veth names add one character and Linux caps interface names at
/// 15 (IFNAMSIZ 16 with the NUL).
pub const MAX_NAME_LEN: usize = 12;

/// The private block test namespaces take their /30 pairs from.
const POOL_BASE: u32 = 0x0a4d_0000; // 10.77.0.0
const POOL_BLOCKS: u32 = 1 << 14; // 10.77.0.0/16 in /30 blocks

/// Names and blocks handed out by this process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// What went wrong setting up or using a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "invalid namespace name {name:?}: {reason} (1 to {MAX_NAME_LEN} characters of a-z, 0-9 and '-')"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid address pair {host_ip}/{prefix} and {ns_ip}/{prefix}: {reason}")]
    InvalidAddresses {
        host_ip: Ipv4Addr,
        ns_ip: Ipv4Addr,
        prefix: u8,
        reason: &'static str,
    },
    #[error("cannot run `{command}`: {source} (is iproute2 installed? apt-get install iproute2)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "cannot enter network namespace {name} ({path}): {detail} (needs root / CAP_SYS_ADMIN)"
    )]
    Enter {
        name: String,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot start a thread for namespace {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a tokio runtime in namespace {name}: {source}")]
    Runtime {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("the thread running in namespace {name} panicked: {message}")]
    Panicked { name: String, message: String },
    #[error("no free /30 left in 10.77.0.0/16 for a test namespace (leftover veths? `ip -4 addr`)")]
    NoFreeSubnet,
}

/// Check that this process can create namespaces, veth pairs and TUN devices. The error names
/// every missing piece, e.g. "not root (euid 1000); no /dev/net/tun".
pub fn require_privileges() -> Result<(), String> {
    let mut missing = Vec::new();
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => {
            if let Some(euid) = status_field(&status, "Uid:").and_then(|uids| {
                uids.split_whitespace()
                    .nth(1)
                    .and_then(|euid| euid.parse::<u32>().ok())
            }) && euid != 0
            {
                missing.push(format!(
                    "not root (effective uid {euid}); run the tests as root"
                ));
            }
            let caps = status_field(&status, "CapEff:")
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .unwrap_or(0);
            // Capability numbers from linux/capability.h.
            for (bit, name, needed_for) in [
                (12, "CAP_NET_ADMIN", "veth pairs, addresses and TUN devices"),
                (21, "CAP_SYS_ADMIN", "`ip netns add` and setns"),
            ] {
                if caps & (1 << bit) == 0 {
                    missing.push(format!("missing {name} (needed for {needed_for})"));
                }
            }
        }
        Err(err) => missing.push(format!("cannot read /proc/self/status: {err}")),
    }
    match std::fs::metadata("/dev/net/tun") {
        Ok(meta) if meta.file_type().is_char_device() => {}
        Ok(_) => missing.push("/dev/net/tun is not a character device".to_owned()),
        Err(err) => missing.push(format!(
            "no /dev/net/tun ({err}); load the tun module or pass the device into the container"
        )),
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push(format!("`ip -V` failed ({})", out.status)),
        Err(err) => missing.push(format!("no `ip` command ({err}); apt-get install iproute2")),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "network namespace tests need: {}",
            missing.join("; ")
        ))
    }
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(str::trim)
}

/// A name no other live process uses: `am<pid hex>-<n>`. The pid in it lets [`sweep_orphans`]
/// recognise namespaces whose creator has died.
pub fn unique_name() -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{UNIQUE_PREFIX}{:x}-{}", std::process::id(), id % 1000)
}

/// Delete namespaces (and their host-side veths) named by [`unique_name`] whose creating process
/// no longer exists: what a test killed before its drops ran leaves behind. Returns how many.
pub fn sweep_orphans() -> usize {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = orphan_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        debug!(target: LOG_TARGET, %name, pid, "deleting a namespace left by a dead process");
        delete_by_name(&name);
        swept += 1;
    }
    swept
}

/// The creator pid of a [`unique_name`] namespace, if `name` has that form.
fn orphan_pid(name: &str) -> Option<u32> {
    let (pid, counter) = name.strip_prefix(UNIQUE_PREFIX)?.split_once('-')?;
    if counter.is_empty() || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// A /30 in 10.77.0.0/16 whose addresses are not assigned in the root namespace: (host address,
/// namespace address, 30). The search starts at a hash of the pid plus a counter, so that
/// concurrent test processes (nextest runs each test in its own) rarely even try the same
/// block; the check against assigned addresses covers the rest.
pub fn unique_subnet() -> Result<(Ipv4Addr, Ipv4Addr, u8), NetnsError> {
    let assigned = assigned_addresses()?;
    // Fibonacci hashing: the top 14 bits of pid × 2^32/φ spread neighbouring pids apart.
    let start = (std::process::id().wrapping_mul(0x9e37_79b9) >> 18)
        .wrapping_add(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    for step in 0..POOL_BLOCKS {
        let block = start.wrapping_add(step) % POOL_BLOCKS;
        let network = POOL_BASE + block * 4;
        let host = Ipv4Addr::from(network + 1);
        let ns = Ipv4Addr::from(network + 2);
        if !assigned.contains(&host) && !assigned.contains(&ns) {
            return Ok((host, ns, 30));
        }
    }
    Err(NetnsError::NoFreeSubnet)
}

/// IPv4 addresses assigned to interfaces in this thread's namespace.
fn assigned_addresses() -> Result<Vec<Ipv4Addr>, NetnsError> {
    let out = ip(&["-4", "-o", "addr", "show"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// A network namespace with a veth link to the root namespace; deleted by name on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    prefix: u8,
}

impl Netns {
    /// Create namespace `name` linked to the root namespace: `host_ip/prefix` on the root side,
    /// `ns_ip/prefix` inside. A namespace or host link of the same name is deleted first.
    pub fn create(
        name: &str,
        host_ip: Ipv4Addr,
        ns_ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<Self, NetnsError> {
        validate_name(name)?;
        validate_addresses(host_ip, ns_ip, prefix)?;
        delete_by_name(name);
        let ns = Self {
            name: name.to_owned(),
            host_if: format!("{name}h"),
            ns_if: format!("{name}n"),
            host_ip,
            ns_ip,
            prefix,
        };
        ip(&["netns", "add", name])?;
        // From here on `ns` is live: an error below drops it, which deletes what was made.
        let host_cidr = format!("{host_ip}/{prefix}");
        let ns_cidr = format!("{ns_ip}/{prefix}");
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ])?;
        ip(&["link", "set", &ns.ns_if, "netns", name])?;
        ip(&["addr", "add", &host_cidr, "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&["-n", name, "addr", "add", &ns_cidr, "dev", &ns.ns_if])?;
        ip(&["-n", name, "link", "set", &ns.ns_if, "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        debug!(target: LOG_TARGET, %name, %host_cidr, %ns_cidr, "namespace created");
        Ok(ns)
    }

    /// Create a namespace with a [`unique_name`] and a free [`unique_subnet`], after deleting
    /// the orphans of dead test processes ([`sweep_orphans`]).
    pub fn create_unique() -> Result<Self, NetnsError> {
        sweep_orphans();
        let (host_ip, ns_ip, prefix) = unique_subnet()?;
        Self::create(&unique_name(), host_ip, ns_ip, prefix)
    }

    /// The namespace's name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root-namespace end's address: how code inside the namespace reaches the host.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace end's address: how the root namespace reaches code inside.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// The root-namespace end of the veth link (its counters are the namespace's traffic).
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }

    /// The prefix length of the veth link.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run the future `f` builds on a new OS thread inside the namespace, on a current-thread
    /// tokio runtime of its own. Tasks it spawns stay on that runtime (and so in the namespace)
    /// until the future returns, when the runtime and its remaining tasks are dropped.
    pub fn run<F, Fut, T>(&self, f: F) -> NsTask<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let name = self.name.clone();
        let path = self.path();
        let (result_tx, result_rx) = oneshot::channel();
        let thread_name = name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                let result = enter(&thread_name, &path).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| NetnsError::Runtime {
                            name: thread_name.clone(),
                            source,
                        })
                });
                // The receiver may be gone (the task was dropped); the result is then unwanted.
                let _ = result_tx.send(result.map(|runtime| runtime.block_on(f())));
            });
        match spawned {
            Ok(thread) => NsTask {
                name,
                state: TaskState::Running {
                    result: result_rx,
                    thread,
                },
            },
            Err(source) => NsTask {
                name: name.clone(),
                state: TaskState::Failed(NetnsError::Thread { name, source }),
            },
        }
    }

    /// `ip netns exec <name> <program>`: add arguments and run it like any [`Command`].
    pub fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_by_name(&self.name);
        debug!(target: LOG_TARGET, name = %self.name, "namespace deleted");
    }
}

/// Delete namespace `name` and its host-side veth, ignoring what does not exist. Deleting the
/// namespace destroys the veth pair with it; the explicit link delete covers a pair whose
/// namespace end was never moved in.
fn delete_by_name(name: &str) {
    let host_if = format!("{name}h");
    if Path::new(NETNS_DIR).join(name).exists()
        && let Err(err) = ip(&["netns", "del", name])
    {
        warn!(target: LOG_TARGET, %name, %err, "cannot delete namespace");
    }
    if Path::new("/sys/class/net").join(&host_if).exists()
        && let Err(err) = ip(&["link", "del", &host_if])
    {
        warn!(target: LOG_TARGET, %name, %host_if, %err, "cannot delete host link");
    }
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let invalid = |reason| NetnsError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid("wrong length"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("unexpected character"));
    }
    if name.starts_with('-') {
        // `ip` would read it as an option.
        return Err(invalid("starts with '-'"));
    }
    Ok(())
}

fn validate_addresses(host_ip: Ipv4Addr, ns_ip: Ipv4Addr, prefix: u8) -> Result<(), NetnsError> {
    let invalid = |reason| NetnsError::InvalidAddresses {
        host_ip,
        ns_ip,
        prefix,
        reason,
    };
    if !(8..=30).contains(&prefix) {
        return Err(invalid("the prefix must be between 8 and 30"));
    }
    if !host_ip.is_private() || !ns_ip.is_private() {
        // Test namespaces must never shadow real destinations.
        return Err(invalid("both addresses must be private (RFC 1918)"));
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    if u32::from(host_ip) & mask != u32::from(ns_ip) & mask || host_ip == ns_ip {
        return Err(invalid(
            "they must be two different addresses of one subnet",
        ));
    }
    Ok(())
}

/// Run `ip <args>`, failing with its stderr.
fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    let command = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(NetnsError::Command {
            command: command(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Move the calling thread into the namespace at `path`.
fn enter(name: &str, path: &Path) -> Result<(), NetnsError> {
    let error = |detail: String| NetnsError::Enter {
        name: name.to_owned(),
        path: path.to_owned(),
        detail,
    };
    let file = File::open(path).map_err(|err| error(err.to_string()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|err| error(format!("setns: {err}")))
}

/// A future running in a namespace ([`Netns::run`]). Dropping it detaches the thread (which
/// ends when its future does); [`NsTask::join`] waits for the result.
pub struct NsTask<T> {
    name: String,
    state: TaskState<T>,
}

enum TaskState<T> {
    Running {
        result: oneshot::Receiver<Result<T, NetnsError>>,
        thread: JoinHandle<()>,
    },
    Failed(NetnsError),
}

impl<T> fmt::Debug for NsTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsTask")
            .field("name", &self.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> NsTask<T> {
    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        match &self.state {
            TaskState::Running { thread, .. } => thread.is_finished(),
            TaskState::Failed(_) => true,
        }
    }

    /// Wait (asynchronously, from any runtime) for the future's output.
    pub async fn join(self) -> Result<T, NetnsError> {
        let name = self.name;
        match self.state {
            TaskState::Failed(err) => Err(err),
            TaskState::Running { result, thread } => match result.await {
                Ok(result) => result,
                // The sender was dropped without a send: the thread panicked. It has ended (or is
                // unwinding), so joining it is short.
                Err(_) => Err(panicked(name, thread)),
            },
        }
    }

    /// Wait (blocking the calling thread) for the future's output.
    pub fn join_blocking(self) -> Result<T, NetnsError> {
        let name = self.name;
        match self.state {
            TaskState::Failed(err) => Err(err),
            TaskState::Running { result, thread } => match result.blocking_recv() {
                Ok(result) => result,
                Err(_) => Err(panicked(name, thread)),
            },
        }
    }
}

fn panicked(name: String, thread: JoinHandle<()>) -> NetnsError {
    let message = match thread.join() {
        Ok(()) => "the thread ended without a result".to_owned(),
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned()),
    };
    NetnsError::Panicked { name, message }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_are_short_enough_for_interface_names_and_recognisable() {
        let name = unique_name();
        assert!(validate_name(&name).is_ok(), "{name}");
        assert!(format!("{name}h").len() <= 15);
        assert_eq!(orphan_pid(&name), Some(std::process::id()));
        assert_eq!(orphan_pid("amx-1"), None);
        assert_eq!(orphan_pid("other-1"), None);
        assert_eq!(orphan_pid("am1f-"), None);
    }

    #[test]
    fn invalid_names_and_addresses_are_refused_before_touching_the_system() {
        for bad in ["", "-x", "UPPER", "has space", "waytoolongname"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let a = Ipv4Addr::new(10, 77, 0, 1);
        let b = Ipv4Addr::new(10, 77, 0, 2);
        assert!(validate_addresses(a, b, 30).is_ok());
        assert!(validate_addresses(a, a, 30).is_err());
        assert!(validate_addresses(a, Ipv4Addr::new(10, 77, 0, 6), 30).is_err());
        assert!(
            validate_addresses(Ipv4Addr::new(8, 8, 8, 1), Ipv4Addr::new(8, 8, 8, 2), 30).is_err()
        );
        assert!(validate_addresses(a, b, 31).is_err());
    }

    /// Needs root: fails (never skips) with what is missing otherwise.
    #[test]
    fn a_namespace_is_reachable_runs_code_inside_and_is_gone_after_drop() {
        require_privileges().unwrap();
        let ns = Netns::create_unique().unwrap();
        let name = ns.name().to_owned();
        assert!(ns.path().exists());

        // A listener bound inside the namespace on its own address, reached from the root side.
        let ns_ip = ns.ns_ip();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let server = ns.run(move || async move {
            let listener = tokio::net::TcpListener::bind((ns_ip, 0)).await.unwrap();
            bound_tx.send(listener.local_addr().unwrap()).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"inside")
                .await
                .unwrap();
        });
        let addr = bound_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut stream, &mut got).unwrap();
        assert_eq!(got, "inside");
        server.join_blocking().unwrap();

        // The root namespace's address is not assigned inside.
        let host_ip = ns.host_ip();
        let inside = ns
            .run(move || async move { std::net::TcpListener::bind((host_ip, 0)).is_err() })
            .join_blocking()
            .unwrap();
        assert!(
            inside,
            "the host address must not be local inside the namespace"
        );

        let out = ns.exec("ip").args(["-o", "link"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{name}n")));

        drop(ns);
        assert!(!Path::new(NETNS_DIR).join(&name).exists());
        assert!(
            !Path::new("/sys/class/net")
                .join(format!("{name}h"))
                .exists()
        );
    }
}
