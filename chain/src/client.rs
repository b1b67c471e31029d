//! [`ChainClient`]: typed reads and writes through the generated bindings.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256, aliases::U192};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::cluster::Cluster::{self, DstackProof, Member, NodeKeys};
use attestmesh_bindings::entry_point::EntryPoint;
use tracing::debug;
use url::Url;

use crate::error::{ChainError, Result};
use crate::rpc::RedactedHttp;
use crate::targets::CHAIN;

/// How long [`ChainClient::send_transaction`] waits for a receipt.
pub const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
const RECEIPT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The sponsorship policy's answer for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SponsorshipDecision {
    pub sponsorable: bool,
    /// Empty when sponsorable, else why not.
    pub reason: String,
}

/// Client of one chain's JSON-RPC. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChainClient {
    provider: DynProvider,
    endpoint: String,
    chain_id: u64,
    /// The signing account, for clients made with a signer.
    signer: Option<Address>,
}

impl ChainClient {
    /// A read-only client. Checks the chain id when `expected_chain_id` is given.
    pub async fn connect(rpc_url: &Url, expected_chain_id: Option<u64>) -> Result<Self> {
        let provider = ProviderBuilder::new()
            .connect_client(default_client(rpc_url))
            .erased();
        Self::from_provider(provider, rpc_url, expected_chain_id, None).await
    }

    /// A read-only client of an endpoint of a chain already identified (the first endpoint of
    /// a [`crate::ChainView`] checked the chain id; an endpoint of another chain cannot agree with
    /// it on block hashes). Makes no request, so an endpoint that is down at boot does not stop
    /// the node while a quorum of the others answers.
    pub fn connect_known(rpc_url: &Url, chain_id: u64) -> Self {
        let provider = ProviderBuilder::new()
            .connect_client(default_client(rpc_url))
            .erased();
        Self {
            provider,
            endpoint: redact(rpc_url),
            chain_id,
            signer: None,
        }
    }

    /// A client that can also send transactions signed by `signer` (operators, devnet, tests;
    /// nodes never do: they hold no ETH and go through [`crate::SponsoredSender`]).
    pub async fn connect_with_signer(
        rpc_url: &Url,
        signer: PrivateKeySigner,
        expected_chain_id: Option<u64>,
    ) -> Result<Self> {
        // Simple nonce management asks the chain for every transaction: the same key is also used
        // by other tools (forge scripts, the operator's CLI), so a cached nonce would go stale.
        let address = signer.address();
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_client(rpc_client(rpc_url)?)
            .erased();
        Self::from_provider(provider, rpc_url, expected_chain_id, Some(address)).await
    }

    async fn from_provider(
        provider: DynProvider,
        rpc_url: &Url,
        expected: Option<u64>,
        signer: Option<Address>,
    ) -> Result<Self> {
        let endpoint = redact(rpc_url);
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|source| ChainError::Transport {
                call: "eth_chainId".into(),
                endpoint: endpoint.clone(),
                source,
            })?;
        if let Some(expected) = expected
            && expected != chain_id
        {
            return Err(ChainError::WrongChain {
                endpoint,
                expected,
                actual: chain_id,
            });
        }
        debug!(target: CHAIN, %endpoint, chain_id, "connected");
        Ok(Self {
            provider,
            endpoint,
            chain_id,
            signer,
        })
    }

    /// The underlying provider, for calls this client does not wrap.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The chain id the RPC reported.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The RPC endpoint, credentials removed (safe to log).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The cluster diamond at `address`.
    pub fn cluster(&self, address: Address) -> Cluster::ClusterInstance<DynProvider> {
        Cluster::new(address, self.provider.clone())
    }

    /// Wraps a contract-call error with this client's endpoint.
    pub fn call_error(
        &self,
        call: impl Into<String>,
        source: alloy::contract::Error,
    ) -> ChainError {
        ChainError::from_call(call, &self.endpoint, source)
    }

    fn transport_error(&self, call: &str, source: alloy::transports::TransportError) -> ChainError {
        ChainError::Transport {
            call: call.into(),
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| self.transport_error("eth_blockNumber", e))
    }

    /// Logs matching `filter` (the caller bounds the range).
    pub async fn logs(&self, filter: &Filter) -> Result<Vec<Log>> {
        self.provider
            .get_logs(filter)
            .await
            .map_err(|e| self.transport_error("eth_getLogs", e))
    }

    /// Fails with [`ChainError::NoCode`] when `address` holds no contract.
    pub async fn require_code(&self, what: &str, address: Address) -> Result<()> {
        let code = self
            .provider
            .get_code_at(address)
            .await
            .map_err(|e| self.transport_error("eth_getCode", e))?;
        if code.is_empty() {
            return Err(ChainError::NoCode {
                what: what.into(),
                address,
                chain_id: self.chain_id,
            });
        }
        Ok(())
    }

    /// The member record of `account`, or `None` when it has none (a failed read is an error,
    /// never `None`).
    pub async fn member_of(&self, cluster: Address, account: Address) -> Result<Option<Member>> {
        let instance = self.cluster(cluster);
        let id = instance
            .memberIdOf(account)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.memberIdOf", e))?;
        if id == 0 {
            return Ok(None);
        }
        let member = instance
            .getMember(id)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.getMember", e))?;
        Ok(Some(member))
    }

    /// Every active member.
    pub async fn active_members(&self, cluster: Address) -> Result<Vec<Member>> {
        self.cluster(cluster)
            .listActiveMembers()
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.listActiveMembers", e))
    }

    /// The current CSK epoch: number, originator, commitment and the previous key's grace
    /// window, in one call.
    pub async fn current_csk_epoch(&self, cluster: Address) -> Result<Cluster::CskEpoch> {
        self.cluster(cluster)
            .currentCskEpoch()
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.currentCskEpoch", e))
    }

    /// One CSK epoch opened so far.
    pub async fn csk_epoch(&self, cluster: Address, epoch: u64) -> Result<Cluster::CskEpoch> {
        self.cluster(cluster)
            .cskEpoch(epoch)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.cskEpoch", e))
    }

    /// The binding digest a registration proof must carry.
    pub async fn registration_digest(
        &self,
        cluster: Address,
        account: Address,
        keys: NodeKeys,
    ) -> Result<B256> {
        self.cluster(cluster)
            .registrationDigest(account, keys)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.registrationDigest", e))
    }

    /// Pre-flights a dstack proof: (derived signer, KMS root), or the decoded reason it fails.
    pub async fn verify_dstack_proof(
        &self,
        cluster: Address,
        proof: DstackProof,
    ) -> Result<(Address, Address)> {
        let out = self
            .cluster(cluster)
            .verifyDstackProof(proof)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.verifyDstackProof", e))?;
        Ok((out.derivedSigner, out.kmsRoot))
    }

    /// Asks the cluster's sponsorship policy about an operation from `sender` with `call_data`.
    pub async fn check_sponsorship(
        &self,
        cluster: Address,
        sender: Address,
        call_data: Bytes,
    ) -> Result<SponsorshipDecision> {
        let out = self
            .cluster(cluster)
            .checkSponsorship(sender, call_data)
            .call()
            .await
            .map_err(|e| self.call_error("Cluster.checkSponsorship", e))?;
        Ok(SponsorshipDecision {
            sponsorable: out.sponsorable,
            reason: out.reason,
        })
    }

    /// The account's next nonce from `EntryPoint.getNonce(sender, key)` via eth_call. Field note 5:
    /// a bundler method that did not exist was once "read" as 0; this read fails loudly instead.
    pub async fn entry_point_nonce(
        &self,
        entry_point: Address,
        sender: Address,
        key: U192,
    ) -> Result<U256> {
        EntryPoint::new(entry_point, self.provider.clone())
            .getNonce(sender, key)
            .call()
            .await
            .map_err(|e| self.call_error("EntryPoint.getNonce", e))
    }

    /// Sends a transaction (clients made with a signer only) and waits for a successful receipt.
    pub async fn send_transaction(
        &self,
        call: &str,
        to: Address,
        data: Bytes,
    ) -> Result<TransactionReceipt> {
        let request = TransactionRequest::default().with_to(to).with_input(data);
        let tx = self.submit(call, request).await?;
        self.wait_for_receipt(call, tx).await
    }

    /// Sends several transactions from this client's signer without waiting between them (each
    /// with its own nonce, counted from the pending one), then waits for every receipt: on a
    /// chain with a block time they land in as few blocks as their gas allows instead of one
    /// block each. They go in waves that fit in a block (anvil drops what does not fit in the
    /// block it mines, rather than keeping it for the next), each wave's receipts awaited before
    /// the next is sent. Fails at the first transaction refused or reverted, naming it; the
    /// ones before it are sent.
    pub async fn send_transactions(
        &self,
        calls: Vec<(String, Address, Bytes)>,
    ) -> Result<Vec<TransactionReceipt>> {
        let from = self.signer.ok_or_else(|| {
            ChainError::Config("send_transactions needs a client made with a signer".into())
        })?;
        let block_gas = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|source| self.transport_error("eth_getBlockByNumber", source))?
            .ok_or_else(|| ChainError::Config("the chain has no latest block".into()))?
            .header
            .gas_limit;
        // Room for other senders' transactions in the same block.
        let wave_budget = block_gas / 10 * 8;
        let mut nonce = self
            .provider
            .get_transaction_count(from)
            .pending()
            .await
            .map_err(|source| self.transport_error("eth_getTransactionCount", source))?;
        let mut receipts = Vec::with_capacity(calls.len());
        let mut wave: Vec<(String, B256)> = Vec::new();
        let mut wave_gas = 0u64;
        for (call, to, data) in calls {
            let request = TransactionRequest::default()
                .with_from(from)
                .with_to(to)
                .with_input(data);
            let gas = self
                .provider
                .estimate_gas(request.clone())
                .await
                .map_err(|source| {
                    match source.as_error_resp().and_then(|e| e.as_revert_data()) {
                        Some(data) => ChainError::Reverted {
                            call: call.clone(),
                            reason: crate::revert::decode(&data),
                        },
                        None => self.transport_error(&call, source),
                    }
                })?;
            if !wave.is_empty() && wave_gas + gas > wave_budget {
                for (call, tx) in wave.drain(..) {
                    receipts.push(self.wait_for_receipt(&call, tx).await?);
                }
                wave_gas = 0;
            }
            let tx = self
                .submit(&call, request.with_nonce(nonce).with_gas_limit(gas))
                .await?;
            nonce += 1;
            wave_gas += gas;
            wave.push((call, tx));
        }
        for (call, tx) in wave {
            receipts.push(self.wait_for_receipt(&call, tx).await?);
        }
        Ok(receipts)
    }

    async fn submit(&self, call: &str, request: TransactionRequest) -> Result<B256> {
        let pending =
            self.provider
                .send_transaction(request)
                .await
                .map_err(|source| {
                    match source.as_error_resp().and_then(|e| e.as_revert_data()) {
                        Some(data) => ChainError::Reverted {
                            call: call.into(),
                            reason: crate::revert::decode(&data),
                        },
                        None => self.transport_error(call, source),
                    }
                })?;
        let tx = *pending.tx_hash();
        debug!(target: CHAIN, call, %tx, "transaction sent");
        Ok(tx)
    }

    /// Polls for the receipt of `tx` ourselves, bounded: a watcher that misses an already-mined
    /// block must not hang the caller forever. A reverted transaction is an error.
    async fn wait_for_receipt(&self, call: &str, tx: B256) -> Result<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
        let receipt = loop {
            match self.provider.get_transaction_receipt(tx).await {
                Ok(Some(receipt)) => break receipt,
                Ok(None) => {}
                Err(source) => {
                    return Err(self.transport_error("eth_getTransactionReceipt", source));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChainError::Config(format!(
                    "{call}: transaction {tx} was not mined within {RECEIPT_TIMEOUT:?}; check the chain and the sender's nonce"
                )));
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        };
        if !receipt.status() {
            return Err(ChainError::TransactionReverted {
                call: call.into(),
                tx: tx.to_string(),
            });
        }
        Ok(receipt)
    }
}

/// How long one chain RPC request may take: a hung RPC must fail the call, not hang the agent.
pub const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The JSON-RPC client over HTTP with a per-request timeout, on the transport that keeps the
/// URL out of errors and logs ([`RedactedHttp`]).
fn rpc_client(rpc_url: &Url) -> Result<alloy::rpc::client::RpcClient> {
    let http = reqwest::Client::builder()
        .timeout(RPC_TIMEOUT)
        .build()
        .map_err(|e| {
            ChainError::Config(format!(
                "cannot build the HTTP client for {}: {}",
                redact(rpc_url),
                crate::redact::reqwest_error(e)
            ))
        })?;
    Ok(RedactedHttp::new(http, rpc_url.clone()).rpc_client())
}

/// The JSON-RPC client over HTTP with reqwest's default client (what alloy's `connect_http`
/// uses), on the transport that keeps the URL out of errors and logs ([`RedactedHttp`]).
fn default_client(rpc_url: &Url) -> alloy::rpc::client::RpcClient {
    RedactedHttp::new(reqwest::Client::new(), rpc_url.clone()).rpc_client()
}

/// Scheme, host and port only: this string goes into logs and errors.
fn redact(url: &Url) -> String {
    crate::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 16, item 4): a chain RPC that cannot be reached produced an error
    /// whose text quoted the full URL, API key included ("error sending request for url
    /// (http://…/v2/KEY)"), and that text reached logs, `waiting_for` and `/healthz`.
    #[tokio::test]
    async fn an_unreachable_rpc_error_never_quotes_the_url() {
        // Bound but not listening: connections are refused, and no other test can take the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let url: Url = format!("http://user:PASSWORD@127.0.0.1:{port}/v2/API_KEY?key=QUERYKEY")
            .parse()
            .unwrap();
        let mut errors = vec![ChainClient::connect(&url, None).await.unwrap_err()];
        let signer = PrivateKeySigner::random();
        errors.push(
            ChainClient::connect_with_signer(&url, signer, None)
                .await
                .unwrap_err(),
        );
        errors.push(
            ChainClient::connect_known(&url, 1)
                .block_number()
                .await
                .unwrap_err(),
        );
        for error in errors {
            let mut texts = vec![error.to_string(), format!("{error:?}")];
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                texts.push(inner.to_string());
                source = inner.source();
            }
            for text in texts {
                for secret in ["PASSWORD", "API_KEY", "QUERYKEY", "/v2"] {
                    assert!(!text.contains(secret), "{secret} in {text}");
                }
            }
            assert!(
                error
                    .to_string()
                    .contains(&format!("http://127.0.0.1:{port}")),
                "the endpoint is still named: {error}"
            );
        }
    }
}
