//! The route registry: app id → backend host. The port comes from the host name, so one entry
//! serves every port of an app, as in dstack where the app id names the CVM.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use attestmesh_dstack::EthAddress;

use super::error::{GatewayError, Result};

/// App id → backend host. Clones share one table, so a handle, the accept loop and a reload
/// task all see the same routes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    inner: Arc<RwLock<HashMap<EthAddress, IpAddr>>>,
}

impl RouteTable {
    /// A table holding `routes` (a later duplicate app id wins).
    pub fn new(routes: impl IntoIterator<Item = (EthAddress, IpAddr)>) -> Self {
        let table = Self::default();
        table.replace(routes);
        table
    }

    /// Route `app_id` to `host`; returns the host it replaced, if any.
    pub fn insert(&self, app_id: EthAddress, host: IpAddr) -> Option<IpAddr> {
        self.write().insert(app_id, host)
    }

    /// Forget `app_id`; returns its host, if it had one. Live connections are not closed.
    pub fn remove(&self, app_id: &EthAddress) -> Option<IpAddr> {
        self.write().remove(app_id)
    }

    /// Replace every route at once (a reload), so no connection sees a half-applied table.
    pub fn replace(&self, routes: impl IntoIterator<Item = (EthAddress, IpAddr)>) {
        let fresh: HashMap<_, _> = routes.into_iter().collect();
        *self.write() = fresh;
    }

    /// The backend host of `app_id`.
    pub fn get(&self, app_id: &EthAddress) -> Option<IpAddr> {
        self.read().get(app_id).copied()
    }

    /// A sorted copy of the table.
    pub fn snapshot(&self) -> BTreeMap<EthAddress, IpAddr> {
        self.read().iter().map(|(k, v)| (*k, *v)).collect()
    }

    // Every write is a single map operation, so a writer that panicked cannot have left the
    // map half-updated: a poisoned lock's data is still valid and is used as is.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<EthAddress, IpAddr>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<EthAddress, IpAddr>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Parse `<app_id>=<ip>` (the `--gateway.route` flag). The app id is 20-byte hex; `0x` and
/// upper case are accepted here, as this is the operator's own configuration, not the SNI.
pub fn parse_route(route: &str) -> Result<(EthAddress, IpAddr)> {
    let invalid = |reason: String| GatewayError::InvalidRoute {
        route: route.to_owned(),
        reason,
    };
    let (app, host) = route
        .split_once('=')
        .ok_or_else(|| invalid("no '='".to_owned()))?;
    parse_entry(app.trim(), host.trim()).map_err(invalid)
}

fn parse_entry(app: &str, host: &str) -> Result<(EthAddress, IpAddr), String> {
    let app_id = EthAddress::from_hex(app).map_err(|err| format!("app id {app:?}: {err}"))?;
    let host = host
        .parse::<IpAddr>()
        .map_err(|err| format!("backend host {host:?} is not an IP address: {err}"))?;
    Ok((app_id, host))
}

/// Read a routes file: a JSON object `{"<app_id>": "<ip>", ...}`.
pub fn load_routes_file(path: &Path) -> Result<Vec<(EthAddress, IpAddr)>> {
    let text = std::fs::read_to_string(path).map_err(|source| GatewayError::RoutesFileRead {
        path: path.to_owned(),
        source,
    })?;
    let format_error = |reason: String| GatewayError::RoutesFileFormat {
        path: path.to_owned(),
        reason,
    };
    let entries: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|err| format_error(err.to_string()))?;
    entries
        .iter()
        .map(|(app, host)| parse_entry(app, host).map_err(format_error))
        .collect()
}
