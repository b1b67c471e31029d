//! The test world: anvil whose history starts at block 47 000 000 with the contracts deployed
//! by the real deploy script, a ClusterFactory deployed *later* (after mined blocks), clusters
//! and members registered with real dstack proofs (the member accounts impersonated, so no
//! bundler is needed), the indexer as a real process (killable, restartable, its key derived
//! from its own dstack simulator), and a JSON-RPC proxy in front of anvil that counts calls and
//! can refuse large log ranges like hosted RPCs do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor, SolEvent};
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::indexer_registry::IndexerRegistry;
use attestmesh_chain::ChainClient;
use attestmesh_devnet::dstack_simulator::keys::{DEFAULT_DEVNET_SEED, kms_root_from_seed};
use attestmesh_devnet::dstack_simulator::{
    DstackSimulator, KeySource, SimulatorConfig, SimulatorHandle,
};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig, member_salt, project_root};
use attestmesh_dstack::EthAddress;
use serde_json::{Value, json};
use url::Url;

/// anvil's genesis in these tests: Base-like history below that does not exist.
pub const GENESIS: u64 = 47_000_000;

/// Fails the test instead of hanging it.
pub async fn within<T>(what: &str, seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {seconds} s"))
}

/// Polls `check` every 50 ms until it returns Some.
pub async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The chain with the deploy script's contracts and a factory deployed later.
pub struct World {
    pub chain: LocalChain,
    /// A read-only client (impersonated sends go through it).
    pub reader: ChainClient,
    /// The factory the indexer follows, deployed after `mined_before` empty blocks.
    pub factory: Address,
    pub factory_deploy_block: u64,
    pub registry: Address,
    pub kms_root: Address,
    pub state: tempfile::TempDir,
}

impl World {
    /// anvil at [`GENESIS`], the deploy script, `mined_before` empty blocks, a second factory,
    /// then `mined_after` empty blocks.
    pub async fn start(mined_before: u64, mined_after: u64) -> Self {
        attestmesh_devnet::test_logs::init("info");
        let chain = LocalChain::start(LocalChainConfig {
            genesis_block: Some(GENESIS),
            ..LocalChainConfig::default()
        })
        .await
        .unwrap();
        let reader = ChainClient::connect(chain.rpc_url(), None).await.unwrap();
        mine(&reader, mined_before).await;
        let (factory, factory_deploy_block) = deploy_factory(&chain).await;
        mine(&reader, mined_after).await;
        let root = kms_root_from_seed(DEFAULT_DEVNET_SEED).unwrap();
        let kms_root = PrivateKeySigner::from_slice(&root.to_bytes())
            .unwrap()
            .address();
        Self {
            registry: chain.deployment().indexer_registry,
            chain,
            reader,
            factory,
            factory_deploy_block,
            kms_root,
            state: tempfile::tempdir().unwrap(),
        }
    }

    pub fn rpc_url(&self) -> &Url {
        self.chain.rpc_url()
    }

    pub async fn head(&self) -> u64 {
        self.reader.block_number().await.unwrap()
    }

    /// A cluster of the later factory, owned by the operator, allowing the devnet KMS root.
    pub async fn create_cluster(&self, name: &str) -> Address {
        let operator = self.chain.operator_client();
        let salt = keccak256(name.as_bytes());
        let factory = ClusterFactory::new(self.factory, operator.provider().clone());
        let cluster = factory
            .predictClusterAddress(self.chain.operator().address(), salt)
            .call()
            .await
            .unwrap();
        let config = ClusterFactory::ClusterConfig {
            owner: self.chain.operator().address(),
            meshNetwork: 0x0a58_0000,
            meshPrefixLength: 16,
            kmsRoots: vec![self.kms_root],
            composeHashes: vec![keccak256(b"attestmesh-devnet:compose-hash")],
            allowAnyDevice: true,
        };
        let data = ClusterFactory::createClusterCall { salt, config }.abi_encode();
        operator
            .send_transaction("ClusterFactory.createCluster", self.factory, data.into())
            .await
            .unwrap();
        cluster
    }

    /// A member of `cluster` registered with a real dstack proof: its account deployed by the
    /// later factory and allowlisted, the `dstack_register` call sent from the (impersonated)
    /// account itself.
    pub async fn add_member(&self, cluster: Address, name: &str) -> Member {
        let operator = self.chain.operator_client();
        let salt = member_salt(name);
        let factory = ClusterFactory::new(self.factory, operator.provider().clone());
        let account = factory
            .predictMemberAccount(cluster, salt)
            .call()
            .await
            .unwrap();
        let allow = Cluster::setAppIdAllowedCall {
            appId: account,
            allowed: true,
        }
        .abi_encode();
        operator
            .send_transaction("Cluster.setAppIdAllowed", cluster, allow.into())
            .await
            .unwrap();
        let create = ClusterFactory::createMemberAccountCall { cluster, salt }.abi_encode();
        operator
            .send_transaction(
                "ClusterFactory.createMemberAccount",
                self.factory,
                create.into(),
            )
            .await
            .unwrap();

        let socket = self.state.path().join(format!("{name}.dstack.sock"));
        let dstack = DstackSimulator::spawn(
            SimulatorConfig::new(
                EthAddress(account.into_array()),
                KeySource::DevnetSeed(DEFAULT_DEVNET_SEED.into()),
            ),
            &socket,
        )
        .unwrap();
        let owner = dstack
            .client()
            .get_key(
                attestmesh_chain::proof::OWNER_PATH,
                attestmesh_chain::proof::OWNER_PURPOSE,
            )
            .await
            .unwrap();
        let keys = Cluster::NodeKeys {
            x25519: keccak256(format!("{name}-x25519")),
            ed25519: keccak256(format!("{name}-ed25519")),
            wireguard: keccak256(format!("{name}-wireguard")),
        };
        let digest = self
            .reader
            .registration_digest(cluster, account, keys.clone())
            .await
            .unwrap();
        let proof =
            attestmesh_chain::proof::dstack_proof(account, "attestmesh-owner", &owner, digest)
                .unwrap();
        let call = Cluster::dstack_registerCall { proof, keys }.abi_encode();
        self.send_as(account, cluster, call.into()).await;
        let member = self
            .reader
            .member_of(cluster, account)
            .await
            .unwrap()
            .expect("registered");
        Member {
            id: member.id,
            account,
            _dstack: dstack,
        }
    }

    /// Sends a transaction from `from` (impersonated, funded) and waits for its receipt.
    pub async fn send_as(&self, from: Address, to: Address, data: Bytes) -> TransactionReceipt {
        let provider = self.reader.provider();
        let _: Value = provider
            .raw_request("anvil_impersonateAccount".into(), [from])
            .await
            .unwrap();
        let _: Value = provider
            .raw_request(
                "anvil_setBalance".into(),
                (from, U256::from(10u64).pow(U256::from(18u64))),
            )
            .await
            .unwrap();
        // The nonce from the chain every time: the provider's cached nonce would run ahead of
        // a chain the reorg test reverts.
        let nonce = provider.get_transaction_count(from).await.unwrap();
        let request = TransactionRequest::default()
            .with_from(from)
            .with_to(to)
            .with_nonce(nonce)
            .with_input(data);
        let tx = *provider.send_transaction(request).await.unwrap().tx_hash();
        let receipt = wait_receipt(&self.reader, tx).await;
        assert!(receipt.status(), "transaction from {from} to {to} reverted");
        receipt
    }

    /// A message from `from` to member `to` (arbitrary ciphertext: the indexer does not read it).
    pub async fn send_message(
        &self,
        cluster: Address,
        from: &Member,
        to: &Member,
        n: u64,
    ) -> TransactionReceipt {
        let call = Cluster::sendCall {
            recipientMemberId: to.id,
            envelopeId: keccak256(format!("envelope-{}-{}-{n}", from.id, to.id)),
            ciphertext: Bytes::from(format!("ciphertext {n}").into_bytes()),
        }
        .abi_encode();
        self.send_as(from.account, cluster, call.into()).await
    }

    /// The first registrant commits the CSK hash.
    pub async fn commit_csk(&self, cluster: Address, first: &Member) -> TransactionReceipt {
        let call = Cluster::commitClusterSharedKeyCall {
            epoch: 0,
            commitment: keccak256(b"a cluster shared key"),
        }
        .abi_encode();
        self.send_as(first.account, cluster, call.into()).await
    }

    /// The owner revokes a member.
    pub async fn revoke(&self, cluster: Address, member: &Member) {
        let call = Cluster::revokeMemberCall {
            memberId: member.id,
        }
        .abi_encode();
        self.chain
            .operator_client()
            .send_transaction("Cluster.revokeMember", cluster, call.into())
            .await
            .unwrap();
    }

    /// The operator registers an indexer.
    pub async fn register_indexer(&self, endpoint: &str, public_key: [u8; 32]) {
        let call = IndexerRegistry::registerIndexerCall {
            endpoint: endpoint.to_string(),
            ed25519PublicKey: B256::from(public_key),
        }
        .abi_encode();
        self.chain
            .operator_client()
            .send_transaction(
                "IndexerRegistry.registerIndexer",
                self.registry,
                call.into(),
            )
            .await
            .unwrap();
    }

    /// Every followed event of `cluster` on chain, as (tx hash, log index).
    pub async fn cluster_events(&self, cluster: Address) -> BTreeSet<(B256, u64)> {
        let filter = Filter::new()
            .address(cluster)
            .event_signature(vec![
                Cluster::MemberRegistered::SIGNATURE_HASH,
                Cluster::MemberRevoked::SIGNATURE_HASH,
                Cluster::CskEpochOpened::SIGNATURE_HASH,
                Cluster::ClusterSharedKeyCommitted::SIGNATURE_HASH,
                Cluster::MessageSent::SIGNATURE_HASH,
            ])
            .from_block(self.factory_deploy_block)
            .to_block(self.head().await);
        self.reader
            .logs(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.transaction_hash.unwrap(), l.log_index.unwrap()))
            .collect()
    }
}

/// A registered member (its dstack simulator lives as long as this).
pub struct Member {
    pub id: u64,
    pub account: Address,
    _dstack: SimulatorHandle,
}

/// Polls for a receipt (alloy's `get_receipt` follows new block numbers, and a test that
/// reverts the chain makes numbers repeat, which it would wait out forever).
pub async fn wait_receipt(client: &ChainClient, tx: B256) -> TransactionReceipt {
    within("a transaction receipt", 30, async {
        loop {
            if let Some(receipt) = client.provider().get_transaction_receipt(tx).await.unwrap() {
                return receipt;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Mines `blocks` empty blocks at once.
pub async fn mine(client: &ChainClient, blocks: u64) {
    if blocks == 0 {
        return;
    }
    let _: Value = client
        .provider()
        .raw_request("anvil_mine".into(), [U256::from(blocks)])
        .await
        .unwrap();
}

/// Deploys a ClusterFactory (plain CREATE, from the forge artifact) sharing the deploy script's
/// facets, init and registry. Returns its address and deploy block.
async fn deploy_factory(chain: &LocalChain) -> (Address, u64) {
    let operator = chain.operator_client();
    let first = ClusterFactory::new(
        chain.deployment().cluster_factory,
        operator.provider().clone(),
    );
    let facets = first.facets().call().await.unwrap();
    let path = project_root().join("out/ClusterFactory.sol/ClusterFactory.json");
    let artifact: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let code: Bytes = artifact["bytecode"]["object"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let args = ClusterFactory::constructorCall {
        entryPoint_: chain.deployment().entry_point,
        indexerRegistry_: chain.deployment().indexer_registry,
        facets_: facets,
        clusterInit_: chain.deployment().cluster_init,
    }
    .abi_encode();
    let mut deploy = code.to_vec();
    deploy.extend_from_slice(&args);
    let tx = *operator
        .provider()
        .send_transaction(TransactionRequest::default().with_deploy_code(deploy))
        .await
        .unwrap()
        .tx_hash();
    let receipt = wait_receipt(operator, tx).await;
    assert!(receipt.status(), "factory deployment reverted");
    (
        receipt.contract_address.unwrap(),
        receipt.block_number.unwrap(),
    )
}

/// A dstack simulator standing in for the indexer's CVM (one per indexer identity).
pub fn indexer_dstack(state: &std::path::Path, name: &str) -> (SimulatorHandle, PathBuf) {
    let socket = state.join(format!("{name}.dstack.sock"));
    let app_id = EthAddress(keccak256(name.as_bytes())[..20].try_into().unwrap());
    let handle = DstackSimulator::spawn(
        SimulatorConfig::new(app_id, KeySource::DevnetSeed(DEFAULT_DEVNET_SEED.into())),
        &socket,
    )
    .unwrap();
    (handle, socket)
}

/// The indexer binary, as a child process. It binds both listeners on `127.0.0.1:0` itself and
/// the harness reads the addresses from its `listening` log line (a port chosen by the test and
/// released before the process binds it could be taken by another test in between).
pub struct IndexerProcess {
    pub name: String,
    /// Where clients reach its gRPC service: the address the process bound, or, for a
    /// [`Self::prepare`]d process, the harness's [`GrpcFront`], which stays the same across
    /// restarts.
    pub grpc: SocketAddr,
    /// Its health listener, as bound at its last start.
    pub health: SocketAddr,
    front: Option<GrpcFront>,
    args: Vec<(String, String)>,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl IndexerProcess {
    /// Starts `attestmesh-indexer` with `extra` environment added to the essentials; returns
    /// once its health listener answers.
    pub async fn spawn(
        name: &str,
        state: &std::path::Path,
        rpc_url: &str,
        factory: Address,
        dstack_socket: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut process = Self::new(name, state, rpc_url, factory, dstack_socket, extra, None);
        process.start().await;
        process
    }

    /// Like [`Self::spawn`], but not started: its gRPC endpoint is known already (a front the
    /// harness holds, forwarding to the process while it runs and closing connections while it
    /// does not, like the gateway in front of a stopped CVM) and stays the same across
    /// [`Self::kill`] and [`Self::start`].
    pub fn prepare(
        name: &str,
        state: &std::path::Path,
        rpc_url: &str,
        factory: Address,
        dstack_socket: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> Self {
        let front = GrpcFront::start();
        Self::new(
            name,
            state,
            rpc_url,
            factory,
            dstack_socket,
            extra,
            Some(front),
        )
    }

    fn new(
        name: &str,
        state: &std::path::Path,
        rpc_url: &str,
        factory: Address,
        dstack_socket: &std::path::Path,
        extra: &[(&str, &str)],
        front: Option<GrpcFront>,
    ) -> Self {
        let mut args = vec![
            ("INDEXER_RPC_URL".to_string(), rpc_url.to_string()),
            ("INDEXER_FACTORY".into(), factory.to_string()),
            (
                "INDEXER_DSTACK_SOCKET".into(),
                dstack_socket.display().to_string(),
            ),
            ("INDEXER_POLL_INTERVAL_MS".into(), "100".into()),
        ];
        for (key, value) in extra {
            args.retain(|(k, _)| k != key);
            args.push(((*key).to_string(), (*value).to_string()));
        }
        // The process picks its ports and says which in its (JSON) `listening` line.
        for (key, value) in [
            ("INDEXER_GRPC_LISTEN", "127.0.0.1:0"),
            ("INDEXER_HEALTH_LISTEN", "127.0.0.1:0"),
            ("INDEXER_LOG_FORMAT", "json"),
        ] {
            args.retain(|(k, _)| k != key);
            args.push((key.to_string(), value.to_string()));
        }
        let unbound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Self {
            name: name.to_string(),
            grpc: front.as_ref().map_or(unbound, |f| f.addr),
            health: unbound,
            front,
            args,
            log: state.join(format!("{name}.log")),
            child: None,
        }
    }

    /// (Re)starts the process with the same identity; returns once it has said where it
    /// listens and its health listener answers.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // Only this start's lines: a restart appends to the same log.
        let from = log.metadata().unwrap().len() as usize;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-indexer"));
        command
            .env_clear()
            .env(
                "RUST_LOG",
                "attestmesh::indexer=debug,attestmesh::chain=debug,info",
            )
            .envs(self.args.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (grpc, health) = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                panic!(
                    "{} exited ({exit}) before listening:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Some(addresses) = listening_line(&self.log, from) {
                break addresses;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log where it listens within 30 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.child = Some(child);
        self.health = health;
        match &self.front {
            Some(front) => front.forward_to(Some(grpc)),
            None => self.grpc = grpc,
        }
        let url = format!("http://{}/healthz", self.health);
        eventually(&format!("{} health listener", self.name), 30, || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
    }

    /// SIGKILL: what a crashed or evicted CVM looks like to clients.
    pub async fn kill(&mut self) {
        if let Some(front) = &self.front {
            front.forward_to(None);
        }
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// The `/status` body.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/status", self.health))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the indexer has caught up.
    pub async fn wait_caught_up(&self, seconds: u64) -> Value {
        eventually(&format!("{} caught up", self.name), seconds, || async {
            let status = self.status().await;
            (status["catching_up"] == json!(false)).then_some(status)
        })
        .await
    }

    /// Waits until the indexer has applied `block`.
    pub async fn wait_applied(&self, block: u64, seconds: u64) {
        eventually(
            &format!("{} applied block {block}", self.name),
            seconds,
            || async {
                let status = self.status().await;
                (status["applied_block"].as_u64() >= Some(block)).then_some(())
            },
        )
        .await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn public_key(status: &Value) -> [u8; 32] {
        hex::decode(status["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }
}

/// The (gRPC, health) addresses of the first `listening` line of the JSON log at `path` after
/// byte `from`.
fn listening_line(path: &std::path::Path, from: usize) -> Option<(SocketAddr, SocketAddr)> {
    let log = std::fs::read(path).unwrap();
    let line = String::from_utf8_lossy(log.get(from..).unwrap_or_default())
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == json!("listening"))?;
    let address = |key: &str| -> SocketAddr {
        line["fields"][key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {key} address in {line}"))
    };
    Some((address("grpc"), address("health")))
}

/// A TCP front on a port it bound itself (`127.0.0.1:0`), forwarding each connection to the
/// indexer process behind it, or closing it at once while there is none. Stops when dropped.
struct GrpcFront {
    addr: SocketAddr,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl GrpcFront {
    /// Binds and starts accepting (inside the test's runtime).
    fn start() -> Self {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let accepting = tokio::spawn({
            let backend = Arc::clone(&backend);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let Some(to) = *backend.lock().unwrap() else {
                        continue;
                    };
                    tokio::spawn(async move {
                        if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            backend,
            accepting,
        }
    }

    fn forward_to(&self, backend: Option<SocketAddr>) {
        *self.backend.lock().unwrap() = backend;
    }
}

impl Drop for GrpcFront {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Changes an upstream reply before the proxy returns it: `(request, reply)`.
pub type Rewrite = Arc<dyn Fn(&Value, &mut Value) + Send + Sync>;

/// A JSON-RPC proxy in front of anvil: counts calls per method, records eth_getLogs ranges,
/// refuses ranges above `max_range` the way hosted RPCs do, adds `delay` to eth_getLogs, and
/// passes replies through a [`Rewrite`] when one is set (an RPC that returns what the chain
/// does not hold).
#[derive(Clone)]
pub struct RpcProxy {
    pub url: Url,
    pub calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// (from, to) of every eth_getLogs forwarded or refused.
    pub log_ranges: Arc<Mutex<Vec<(u64, u64, bool)>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: Url,
    http: reqwest::Client,
    max_range: Option<u64>,
    delay: Duration,
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    log_ranges: Arc<Mutex<Vec<(u64, u64, bool)>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
}

impl RpcProxy {
    pub async fn spawn(upstream: &Url, max_range: Option<u64>, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let url: Url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let state = ProxyState {
            upstream: upstream.clone(),
            http: reqwest::Client::new(),
            max_range,
            delay,
            calls: Arc::default(),
            log_ranges: Arc::default(),
            rewrite: Arc::default(),
        };
        let proxy = Self {
            url,
            calls: Arc::clone(&state.calls),
            log_ranges: Arc::clone(&state.log_ranges),
            rewrite: Arc::clone(&state.rewrite),
        };
        let app = axum::Router::new()
            .route("/", axum::routing::post(forward))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        proxy
    }

    /// Rewrites the following replies (None: honest again).
    pub fn set_rewrite(&self, rewrite: Option<Rewrite>) {
        *self.rewrite.lock().unwrap() = rewrite;
    }

    pub fn calls_of(&self, method: &str) -> u64 {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }
}

fn hex_u64(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.trim_start_matches("0x"), 16).ok()
}

async fn forward(
    axum::extract::State(state): axum::extract::State<ProxyState>,
    axum::Json(request): axum::Json<Value>,
) -> axum::Json<Value> {
    let method = request["method"].as_str().unwrap_or("").to_string();
    *state
        .calls
        .lock()
        .unwrap()
        .entry(method.clone())
        .or_default() += 1;
    if method == "eth_getLogs" {
        let filter = &request["params"][0];
        if let (Some(from), Some(to)) = (hex_u64(&filter["fromBlock"]), hex_u64(&filter["toBlock"]))
        {
            let refused = state.max_range.is_some_and(|max| to - from + 1 > max);
            state.log_ranges.lock().unwrap().push((from, to, refused));
            if refused {
                return axum::Json(json!({
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "error": {
                        "code": -32602,
                        "message": format!(
                            "query exceeds max block range {}",
                            state.max_range.unwrap_or_default()
                        ),
                    }
                }));
            }
        }
        tokio::time::sleep(state.delay).await;
    }
    let mut response = state
        .http
        .post(state.upstream.clone())
        .json(&request)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let rewrite = state.rewrite.lock().unwrap().clone();
    if let Some(rewrite) = rewrite {
        rewrite(&request, &mut response);
    }
    axum::Json(response)
}
