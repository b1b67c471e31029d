//! The agents' sponsored operations, as the start, join and steady-state figures count them:
//! every node's `attestmesh_agent_sponsored_operations_total` read from its `/metrics`, all
//! nodes asked at once (an agent without the counter fails the run rather than counting as
//! none), then added up over the cluster or by `kind`.

use std::collections::BTreeMap;
use std::time::Duration;

use eyre::WrapErr;

use crate::cluster::{Cluster, MetricSeries as Counts, family_series};

/// The agents' counter of sponsored operations included on chain, one series per `kind`.
const SPONSORED_OPERATIONS: &str = "attestmesh_agent_sponsored_operations_total";

/// Every series of one counter family, by label set (`kind="envelopes"`; empty without
/// labels).
/// Each node's sponsored operations by label set, in node order, all nodes asked at once.
pub(super) async fn sponsored_operations(cluster: &Cluster) -> eyre::Result<Vec<Counts>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .wrap_err("cannot build an HTTP client")?;
    let mut asks = tokio::task::JoinSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (http, url, name) = (http.clone(), node.metrics_url(), node.name.clone());
        asks.spawn(async move {
            let text = http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .wrap_err_with(|| format!("{name}: {url} does not answer"))?
                .text()
                .await
                .wrap_err_with(|| format!("{name}: {url} body"))?;
            let series = family_series(&text, SPONSORED_OPERATIONS)
                .wrap_err_with(|| format!("{name}: {url}"))?
                .ok_or_else(|| {
                    eyre::eyre!(
                        "{name}: {url} has no {SPONSORED_OPERATIONS}: an agent that does not \
                         count its sponsored operations"
                    )
                })?;
            eyre::Ok((i, series))
        });
    }
    let mut per_node = vec![BTreeMap::new(); cluster.nodes.len()];
    while let Some(answer) = asks.join_next().await {
        let (i, series) = answer.wrap_err("a /metrics task failed")??;
        per_node[i] = series;
    }
    Ok(per_node)
}

/// Every node's operations added up.
pub(super) fn total(per_node: &[Counts]) -> f64 {
    per_node.iter().flat_map(BTreeMap::values).sum()
}

/// The cluster's operations by kind (`kind="x"` as `x`).
pub(super) fn by_kind(per_node: &[Counts]) -> BTreeMap<String, f64> {
    let mut kinds = BTreeMap::new();
    for (labels, count) in per_node.iter().flatten() {
        let kind = labels
            .strip_prefix("kind=\"")
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(labels);
        *kinds.entry(kind.to_string()).or_default() += count;
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_family_adds_up_over_its_series() {
        let text = "# HELP attestmesh_agent_sponsored_operations Sponsored operations.\n\
                    # TYPE attestmesh_agent_sponsored_operations counter\n\
                    attestmesh_agent_sponsored_operations_total{kind=\"registration\"} 1\n\
                    attestmesh_agent_sponsored_operations_total{kind=\"envel}pes\"} 2\n\
                    attestmesh_agent_sponsored_operations_total_extra 7\n\
                    attestmesh_agent_messages_sent_total 9\n\
                    # EOF\n";
        let series = family_series(text, SPONSORED_OPERATIONS).unwrap().unwrap();
        assert_eq!(series.values().sum::<f64>(), 3.0);
        assert_eq!(by_kind(&[series.clone(), series])["envel}pes"], 4.0);
        // Declared with no series yet: zero. Not there at all: no figure.
        let declared = "# TYPE attestmesh_agent_sponsored_operations counter\n# EOF\n";
        assert_eq!(
            family_series(declared, SPONSORED_OPERATIONS).unwrap(),
            Some(BTreeMap::new())
        );
        assert_eq!(
            family_series("attestmesh_agent_live_peers 2\n", SPONSORED_OPERATIONS).unwrap(),
            None
        );
        assert!(
            family_series(
                "attestmesh_agent_sponsored_operations_total x\n",
                SPONSORED_OPERATIONS
            )
            .is_err()
        );
    }
}
