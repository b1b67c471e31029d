//! A cluster's allowlists (compose hashes, KMS roots, devices, app ids, TCB advisories) and
//! instance pins: each edit checks the signer owns the cluster and sends nothing when nothing
//! would change.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use serde::Serialize;
use tracing::info;

use super::Operator;
use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

/// The allowlists `allow` edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowKind {
    /// A dstack compose hash (32 bytes) allowed to boot.
    ComposeHash,
    /// A dstack device id (32 bytes) allowed to boot (when not any device may).
    Device,
    /// A dstack KMS root address whose signature chains are accepted.
    KmsRoot,
    /// A member account (= dstack app id) allowed to register.
    AppId,
}

impl fmt::Display for AllowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowKind::ComposeHash => "compose hash",
            AllowKind::Device => "device",
            AllowKind::KmsRoot => "KMS root",
            AllowKind::AppId => "app id",
        })
    }
}

/// The outcome of `allow` and `allow-any-device`.
#[derive(Debug, Clone, Serialize)]
pub struct AllowReport {
    pub cluster: Address,
    pub kind: String,
    pub value: String,
    pub allowed: bool,
    /// False when it already was in that state (nothing was sent).
    pub changed: bool,
}

impl fmt::Display for AllowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.allowed {
            "allowed"
        } else {
            "not allowed"
        };
        if self.changed {
            write!(
                f,
                "{} {} is now {state} in cluster {}",
                self.kind, self.value, self.cluster
            )
        } else {
            write!(
                f,
                "{} {} was already {state} in cluster {}: nothing sent",
                self.kind, self.value, self.cluster
            )
        }
    }
}

/// Adds (`allowed`) or removes a value of one allowlist.
pub async fn allow(
    op: &Operator,
    cluster: Address,
    kind: AllowKind,
    value: &str,
    allowed: bool,
) -> Result<AllowReport> {
    op.require_owner(cluster).await?;
    let instance = op.client.cluster(cluster);
    let (current, call, data, shown) = match kind {
        AllowKind::ComposeHash | AllowKind::Device => {
            let word = B256::from_str(value).map_err(|_| {
                DeployError::input(
                    kind.to_string(),
                    format!("{value:?} is not 32 bytes of hex"),
                )
            })?;
            if word == B256::ZERO {
                return Err(DeployError::input(
                    kind.to_string(),
                    "the zero hash is not allowed",
                ));
            }
            if kind == AllowKind::ComposeHash {
                let list = instance
                    .composeHashes()
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.composeHashes", e))?;
                let data = Cluster::setComposeHashAllowedCall {
                    composeHash: word,
                    allowed,
                }
                .abi_encode();
                (
                    list.contains(&word),
                    "Cluster.setComposeHashAllowed",
                    data,
                    word.to_string(),
                )
            } else {
                let list = instance
                    .deviceIds()
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.deviceIds", e))?;
                let data = Cluster::setDeviceAllowedCall {
                    deviceId: word,
                    allowed,
                }
                .abi_encode();
                (
                    list.contains(&word),
                    "Cluster.setDeviceAllowed",
                    data,
                    word.to_string(),
                )
            }
        }
        AllowKind::KmsRoot | AllowKind::AppId => {
            let address = Address::from_str(value).map_err(|_| {
                DeployError::input(kind.to_string(), format!("{value:?} is not an address"))
            })?;
            if address == Address::ZERO {
                return Err(DeployError::input(
                    kind.to_string(),
                    "the zero address is not allowed",
                ));
            }
            if kind == AllowKind::KmsRoot {
                let current = instance
                    .isKmsRootAllowed(address)
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.isKmsRootAllowed", e))?;
                if current && !allowed {
                    let roots = instance
                        .kmsRoots()
                        .call()
                        .await
                        .map_err(|e| op.client.call_error("Cluster.kmsRoots", e))?;
                    if roots.len() == 1 {
                        return Err(DeployError::precondition(
                            format!("{address} is the cluster's only KMS root"),
                            "allow the new KMS root first, then remove this one (a cluster without a KMS root can register no node)",
                        ));
                    }
                }
                let data = Cluster::setKmsRootAllowedCall {
                    kmsRoot: address,
                    allowed,
                }
                .abi_encode();
                (
                    current,
                    "Cluster.setKmsRootAllowed",
                    data,
                    address.to_string(),
                )
            } else {
                let current = instance
                    .isAppIdAllowed(address)
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.isAppIdAllowed", e))?;
                let data = Cluster::setAppIdAllowedCall {
                    appId: address,
                    allowed,
                }
                .abi_encode();
                (
                    current,
                    "Cluster.setAppIdAllowed",
                    data,
                    address.to_string(),
                )
            }
        }
    };
    let changed = current != allowed;
    if changed {
        op.client
            .send_transaction(call, cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, %kind, value = %shown, allowed, "allowlist changed");
    }
    Ok(AllowReport {
        cluster,
        kind: kind.to_string(),
        value: shown,
        allowed,
        changed,
    })
}

/// Whether any device may boot (otherwise only allowlisted device ids).
pub async fn set_allow_any_device(
    op: &Operator,
    cluster: Address,
    allow: bool,
) -> Result<AllowReport> {
    op.require_owner(cluster).await?;
    let current = op
        .client
        .cluster(cluster)
        .allowAnyDevice()
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.allowAnyDevice", e))?;
    let changed = current != allow;
    if changed {
        let data = Cluster::setAllowAnyDeviceCall { allowAny: allow }.abi_encode();
        op.client
            .send_transaction("Cluster.setAllowAnyDevice", cluster, data.into())
            .await?;
    }
    Ok(AllowReport {
        cluster,
        kind: "any device".into(),
        value: "(every device id)".into(),
        allowed: allow,
        changed,
    })
}

/// Puts a TCB advisory id (e.g. `INTEL-SA-00837`) on the boot gate's grace list (`allowed`) or
/// takes it off. The boot gate refuses a TEE whose TCB status is not UpToDate, and one reporting
/// an advisory that is not on this list.
pub async fn allow_advisory(
    op: &Operator,
    cluster: Address,
    advisory_id: &str,
    allowed: bool,
) -> Result<AllowReport> {
    let advisory_id = advisory_id.trim();
    if advisory_id.is_empty() {
        return Err(DeployError::input(
            "advisory id",
            "it is empty; pass the id the TEE reports, e.g. INTEL-SA-00837",
        ));
    }
    if advisory_id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(DeployError::input(
            "advisory id",
            format!("{advisory_id:?} contains whitespace; pass one id, e.g. INTEL-SA-00837"),
        ));
    }
    op.require_owner(cluster).await?;
    let current = op
        .client
        .cluster(cluster)
        .isAdvisoryAllowed(advisory_id.to_string())
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.isAdvisoryAllowed", e))?;
    let changed = current != allowed;
    if changed {
        let data = Cluster::setAdvisoryAllowedCall {
            advisoryId: advisory_id.to_string(),
            allowed,
        }
        .abi_encode();
        op.client
            .send_transaction("Cluster.setAdvisoryAllowed", cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, advisory_id, allowed, "TCB advisory grace list changed");
    }
    Ok(AllowReport {
        cluster,
        kind: "TCB advisory".into(),
        value: advisory_id.to_string(),
        allowed,
        changed,
    })
}

/// The outcome of `pin-instance`.
#[derive(Debug, Clone, Serialize)]
pub struct PinReport {
    pub cluster: Address,
    /// The member account (= dstack app id).
    pub app_id: Address,
    /// The one instance id it may boot as; `None`: any instance.
    pub instance_id: Option<Address>,
    /// False when it was already so (nothing was sent).
    pub changed: bool,
    /// Whether the app id is allowlisted (a pin on an app id that may not register is inert).
    pub app_id_allowed: bool,
}

impl fmt::Display for PinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.instance_id {
            Some(instance) => format!("may boot only as instance {instance}"),
            None => "may boot as any instance".into(),
        };
        if self.changed {
            write!(
                f,
                "app id {} {state} in cluster {}",
                self.app_id, self.cluster
            )?;
        } else {
            write!(
                f,
                "app id {} already {state} in cluster {}: nothing sent",
                self.app_id, self.cluster
            )?;
        }
        if !self.app_id_allowed {
            write!(
                f,
                " (note: the app id is not allowlisted; `allow app-id` it)"
            )?;
        }
        Ok(())
    }
}

/// Pins the dstack instance id a member account (= app id) may boot as, or with `None` unpins
/// it. The boot gate refuses any other instance of that app id.
pub async fn pin_instance(
    op: &Operator,
    cluster: Address,
    app_id: Address,
    instance_id: Option<Address>,
) -> Result<PinReport> {
    if app_id == Address::ZERO {
        return Err(DeployError::input(
            "app id",
            "the zero address is not an app id",
        ));
    }
    if instance_id == Some(Address::ZERO) {
        return Err(DeployError::input(
            "instance id",
            "the zero address means \"any instance\": use --unpin",
        ));
    }
    op.require_owner(cluster).await?;
    let instance = op.client.cluster(cluster);
    let current = instance
        .pinnedInstance(app_id)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.pinnedInstance", e))?;
    let app_id_allowed = instance
        .isAppIdAllowed(app_id)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.isAppIdAllowed", e))?;
    let target = instance_id.unwrap_or(Address::ZERO);
    let changed = current != target;
    if changed {
        let data = Cluster::setInstancePinnedCall {
            appId: app_id,
            instanceId: target,
        }
        .abi_encode();
        op.client
            .send_transaction("Cluster.setInstancePinned", cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, %app_id, instance = %target, "instance pin changed");
    }
    Ok(PinReport {
        cluster,
        app_id,
        instance_id,
        changed,
        app_id_allowed,
    })
}
