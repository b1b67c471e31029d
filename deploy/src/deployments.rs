//! The deployments file `script/Deploy.s.sol` writes (`deployments/<chainId>.json`): every
//! contract address of one deployment on one chain.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::error::{DeployError, Result};

/// The folder under the project root that forge may write to (foundry.toml `fs_permissions`).
pub const DEPLOYMENTS_DIR: &str = "deployments";

/// Every address of a deployment, named as the deploy script writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployments {
    pub chain_id: u64,
    pub entry_point: Address,
    pub cluster_factory: Address,
    pub indexer_registry: Address,
    pub verifying_paymaster: Address,
    pub cluster_init: Address,
    pub diamond_cut_facet: Address,
    pub diamond_loupe_facet: Address,
    pub ownership_facet: Address,
    pub member_facet: Address,
    pub registration_facet: Address,
    pub message_facet: Address,
    pub sponsorship_facet: Address,
}

impl Deployments {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| DeployError::Io {
            action: "read the deployments file",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| {
            DeployError::input(
                format!("deployments file {}", path.display()),
                format!("{e}; it must be the JSON script/Deploy.s.sol writes (rerun `attestmesh-operator deploy`)"),
            )
        })
    }

    /// Every recorded contract, by the name the file uses.
    pub fn contracts(&self) -> Vec<(&'static str, Address)> {
        vec![
            ("entryPoint", self.entry_point),
            ("clusterFactory", self.cluster_factory),
            ("indexerRegistry", self.indexer_registry),
            ("verifyingPaymaster", self.verifying_paymaster),
            ("clusterInit", self.cluster_init),
            ("diamondCutFacet", self.diamond_cut_facet),
            ("diamondLoupeFacet", self.diamond_loupe_facet),
            ("ownershipFacet", self.ownership_facet),
            ("memberFacet", self.member_facet),
            ("registrationFacet", self.registration_facet),
            ("messageFacet", self.message_facet),
            ("sponsorshipFacet", self.sponsorship_facet),
        ]
    }
}

/// `deployments/<chainId>.json`, relative to the project root.
pub fn default_relative_path(chain_id: u64) -> PathBuf {
    Path::new(DEPLOYMENTS_DIR).join(format!("{chain_id}.json"))
}

/// The deployments file as a path relative to `root` inside `deployments/` (forge may write
/// only there), from an operator-given path that is relative to `root` or absolute.
pub fn relative_to_root(root: &Path, given: &Path) -> Result<PathBuf> {
    let relative = if given.is_absolute() {
        let root = root.canonicalize().map_err(|source| DeployError::Io {
            action: "resolve the project root",
            path: root.to_path_buf(),
            source,
        })?;
        let parent = given.parent().unwrap_or(Path::new("/"));
        let parent = parent.canonicalize().map_err(|source| DeployError::Io {
            action: "resolve the folder of the deployments file",
            path: parent.to_path_buf(),
            source,
        })?;
        let file = given.file_name().ok_or_else(|| {
            DeployError::input(
                "--deployments-file",
                format!("{} names no file", given.display()),
            )
        })?;
        parent
            .strip_prefix(&root)
            .map(|p| p.join(file))
            .map_err(|_| outside(given))?
    } else {
        given.to_path_buf()
    };
    let mut parts = relative.components();
    let first_is_dir = matches!(
        parts.next(),
        Some(std::path::Component::Normal(first)) if first == DEPLOYMENTS_DIR
    );
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let is_json = relative.extension().is_some_and(|e| e == "json");
    if !first_is_dir || !plain || relative.components().count() != 2 || !is_json {
        return Err(outside(given));
    }
    Ok(relative)
}

fn outside(given: &Path) -> DeployError {
    DeployError::input(
        "--deployments-file",
        format!(
            "{} is not a .json file directly inside deployments/ of the project root; forge may write only there (foundry.toml fs_permissions): use deployments/<name>.json",
            given.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_deploy_script_writes() {
        // The shape `vm.serializeAddress` produces (keys sorted, checksummed addresses).
        let text = r#"{
  "chainId": 31337,
  "clusterFactory": "0xACC183b40b9f8338579F4c3fC4fadACA0e3a2C3f",
  "clusterInit": "0x91f27c6847b1D7845546D27A4075E75E77dEf47a",
  "diamondCutFacet": "0xc2b2B3066a7Bd9D1732805103b80C36A3C1384E6",
  "diamondLoupeFacet": "0x08Cc7Fc23208Be609Aac206AF6E4826B8efDEe29",
  "entryPoint": "0x0000000071727De22E5E9d8BAf0edAc6f37da032",
  "indexerRegistry": "0x2818B05cA17E295e055f69AEFa8D443F8A6a0AaE",
  "memberFacet": "0xFC0fb4435847d5bC181264E6d16D86E8CA4f19E9",
  "messageFacet": "0x7CB482D8B87e538B1C2A6ea923f9f154af9B953A",
  "ownershipFacet": "0x560BBE99c9BB27ceB9c366f153b0731395B82794",
  "registrationFacet": "0x19De20DBbaC230d8eE212CC55820e5bAF1675e9A",
  "sponsorshipFacet": "0x60eD5A98eB4aFBb9Ca932cB4DA9939F10fe54FE7",
  "verifyingPaymaster": "0x0C891e531089Ab12ee00CB73BfdD4e11cD7D1725"
}"#;
        let d: Deployments = serde_json::from_str(text).unwrap();
        assert_eq!(d.chain_id, 31337);
        assert_eq!(d.entry_point, attestmesh_bindings::ENTRY_POINT_V07);
        assert_eq!(d.contracts().len(), 12);
    }

    #[test]
    fn deployments_file_must_stay_inside_deployments() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("deployments")).unwrap();
        assert_eq!(
            relative_to_root(root.path(), Path::new("deployments/8453.json")).unwrap(),
            PathBuf::from("deployments/8453.json")
        );
        assert_eq!(
            relative_to_root(root.path(), &root.path().join("deployments/x.json")).unwrap(),
            PathBuf::from("deployments/x.json")
        );
        for bad in [
            "8453.json",
            "deployments/../x.json",
            "deployments/a/b.json",
            "deployments/x.txt",
        ] {
            let err = relative_to_root(root.path(), Path::new(bad)).unwrap_err();
            assert!(err.to_string().contains("fs_permissions"), "{bad}: {err}");
        }
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(relative_to_root(root.path(), &elsewhere.path().join("x.json")).is_err());
    }
}
