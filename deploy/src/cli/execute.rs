//! A parsed command run against this crate's routines, its report as JSON and text.

use std::time::Duration;

use serde::Serialize;

use super::args::{ChainArgs, CheckIndexerArgs, Command, SignerArgs, project_root};
use crate::deploy::{self, DeployOptions, Expectation, WebhookRoute};
use crate::deployments;
use crate::dstack_kms;
use crate::error::{DeployError, Result};
use crate::indexer_check::{
    self, DEFAULT_KEY_LABELS, IndexerCheckReport, IndexerIdentity, KeyOrigin,
};
use crate::operator::{self, Cidr, NewCluster, Operator};
use crate::webhook_check;

/// A command's result: JSON for machines, text for people.
#[derive(Debug, Clone)]
pub struct Output {
    pub json: serde_json::Value,
    pub text: String,
}

fn output<T: Serialize + std::fmt::Display>(report: &T) -> Result<Output> {
    let json = serde_json::to_value(report)
        .map_err(|e| DeployError::input("report", format!("cannot encode as JSON: {e}")))?;
    Ok(Output {
        json,
        text: report.to_string(),
    })
}

async fn operator(chain: &ChainArgs, signer: Option<&SignerArgs>) -> Result<Operator> {
    match signer {
        Some(args) => {
            let signer = args.required()?;
            let sender = signer.address();
            let client =
                deploy::connect(&chain.rpc_url, chain.expected_chain_id, Some(signer)).await?;
            Ok(Operator {
                client,
                sender: Some(sender),
            })
        }
        None => Ok(Operator {
            client: deploy::connect(&chain.rpc_url, chain.expected_chain_id, None).await?,
            sender: None,
        }),
    }
}

/// Runs one command and returns its report.
pub async fn execute(command: Command) -> Result<Output> {
    match command {
        Command::Deploy(args) => {
            let signer = args.signer.required()?;
            let root = project_root(args.project_root.clone());
            let options = DeployOptions {
                operator: args.operator,
                sponsor_signer: args.sponsor_signer,
                paymaster_deposit: args.paymaster_deposit,
                min_balance: args.min_balance_wei,
                deployments_file: args.deployments_file.clone(),
                broadcast_dir: args.broadcast_dir.clone(),
                forge_timeout: Duration::from_secs(args.forge_timeout_secs.max(1)),
                webhook: args.webhook_url.clone().map(|url| WebhookRoute {
                    url,
                    expected_policies: args.webhook_policies.clone(),
                }),
                ..DeployOptions::new(
                    args.chain.rpc_url.clone(),
                    args.chain.expected_chain_id,
                    root,
                )
            };
            output(&deploy::deploy(&options, signer).await?)
        }
        Command::VerifyDeployment { chain, contracts } => {
            let client = deploy::connect(&chain.rpc_url, chain.expected_chain_id, None).await?;
            let path = match &contracts.deployments {
                Some(path) => path.clone(),
                None => project_root(contracts.project_root.clone())
                    .join(deployments::default_relative_path(client.chain_id())),
            };
            output(&deploy::verify_deployment(&client, &path, &Expectation::default()).await?)
        }
        Command::CreateCluster(args) => {
            let op = operator(&args.chain, Some(&args.signer)).await?;
            let factory = args.contracts.factory(op.client.chain_id())?;
            let mut kms_roots = args.kms_roots.clone();
            if let Some(kms) = args.kms_root_from_dstack_kms {
                let root = dstack_kms::kms_root_from_dstack_kms(&op.client, kms).await?;
                tracing::info!(target: crate::LOG_TARGET, %kms, %root, "KMS root read from DstackKms");
                if !kms_roots.contains(&root) {
                    kms_roots.push(root);
                }
            }
            let request = NewCluster {
                salt: operator::parse_salt(&args.salt),
                cidr: args.mesh_cidr.parse::<Cidr>()?,
                kms_roots,
                compose_hashes: args.compose_hashes.clone(),
                allow_any_device: args.allow_any_device,
                owner: args.owner,
            };
            output(&operator::create_cluster(&op, factory, request).await?)
        }
        Command::Allow {
            chain,
            signer,
            cluster,
            kind,
            value,
            remove,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::allow(&op, cluster.cluster, kind, &value, !remove).await?)
        }
        Command::AllowAnyDevice {
            chain,
            signer,
            cluster,
            allow,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::set_allow_any_device(&op, cluster.cluster, allow).await?)
        }
        Command::AllowAdvisory {
            chain,
            signer,
            cluster,
            advisory_id,
            remove,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::allow_advisory(&op, cluster.cluster, &advisory_id, !remove).await?)
        }
        Command::PinInstance {
            chain,
            signer,
            cluster,
            app_id,
            instance_id,
            unpin: _,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::pin_instance(&op, cluster.cluster, app_id, instance_id).await?)
        }
        Command::PredictAccount {
            chain,
            cluster,
            node_name,
        } => {
            let op = operator(&chain, None).await?;
            output(&operator::predict_account(&op, cluster.cluster, &node_name).await?)
        }
        Command::CreateAccount {
            chain,
            signer,
            cluster,
            node_name,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::create_account(&op, cluster.cluster, &node_name).await?)
        }
        Command::Revoke {
            chain,
            signer,
            cluster,
            member_id,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::revoke(&op, cluster.cluster, member_id).await?)
        }
        Command::RotateCsk {
            chain,
            signer,
            cluster,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::rotate_csk(&op, cluster.cluster).await?)
        }
        Command::SetCskGrace {
            chain,
            signer,
            cluster,
            seconds,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            output(&operator::set_csk_grace(&op, cluster.cluster, seconds).await?)
        }
        Command::RegisterIndexer {
            chain,
            signer,
            contracts,
            endpoint,
            ed25519_key,
        } => {
            let op = operator(&chain, Some(&signer)).await?;
            let registry = contracts.indexer_registry(op.client.chain_id())?;
            output(&operator::register_indexer(&op, registry, &endpoint, ed25519_key).await?)
        }
        Command::Show {
            chain,
            cluster,
            message_blocks,
        } => {
            let op = operator(&chain, None).await?;
            output(&operator::show(&op, cluster.cluster, message_blocks.max(1)).await?)
        }
        Command::CheckWebhook {
            url,
            expected_chain_id,
            expected_policy,
        } => {
            output(&webhook_check::check_webhook(&url, expected_chain_id, &expected_policy).await?)
        }
        Command::CheckIndexer(args) => output(&check_indexer(&args).await?),
    }
}

async fn check_indexer(args: &CheckIndexerArgs) -> Result<IndexerCheckReport> {
    // The chain first: it names the factory the indexer must follow.
    let chain = match (&args.rpc_url, args.expected_chain_id) {
        (Some(rpc_url), Some(chain_id)) => {
            let client = deploy::connect(rpc_url, chain_id, None).await?;
            let registry = args.contracts.indexer_registry(client.chain_id())?;
            let factory = args.contracts.factory(client.chain_id())?;
            Some((client, registry, factory))
        }
        _ => None,
    };
    let (key, origin) = match (&args.health_url, &args.log_file) {
        (Some(url), _) => {
            let expect = IndexerIdentity {
                chain_id: args.expected_chain_id,
                factory: chain
                    .as_ref()
                    .map(|(_, _, factory)| *factory)
                    .or(args.contracts.factory),
            };
            (
                indexer_check::key_from_health(url, expect).await?,
                KeyOrigin::Health(url.to_string()),
            )
        }
        (None, Some(path)) => {
            let labels: Vec<&str> = if args.labels.is_empty() {
                DEFAULT_KEY_LABELS.to_vec()
            } else {
                args.labels.iter().map(String::as_str).collect()
            };
            (
                indexer_check::key_from_log_file(path, &labels)?,
                KeyOrigin::Log(path.clone()),
            )
        }
        (None, None) => {
            return Err(DeployError::input(
                "check-indexer",
                "pass --health-url <url> or --log-file <path>",
            ));
        }
    };
    if let Some(expected) = args.expected_key
        && expected != key
    {
        return Err(DeployError::precondition(
            format!("the indexer's key is {key}, expected {expected}"),
            "the indexer derived another identity (another app id or KMS?): re-register it, or check you are looking at the right indexer",
        ));
    }
    let mut report = IndexerCheckReport {
        origin,
        ed25519_public_key: key,
        registry: None,
        registered_id: None,
        registered_endpoint: None,
    };
    if let Some((client, registry, _)) = &chain {
        let (id, endpoint) =
            indexer_check::check_registered(client, *registry, key, args.endpoint.as_deref())
                .await?;
        report.registry = Some(*registry);
        report.registered_id = Some(id);
        report.registered_endpoint = Some(endpoint);
    }
    Ok(report)
}
