//! What survives a restart: virtual-key usage, per-key windows and
//! cooldowns (a key resting on a spent daily quota stays benched) and
//! per-provider token usage, kept in the embedded store
//! ([`crate::ops::store`], one file under `FREELLM_DATA_DIR`).
//!
//! Every second a snapshot of the counters is staged and committed in one
//! transaction; graceful shutdown commits a last one. **Guarantee:** a
//! SIGKILL or power loss loses at most the last second of counts; anything
//! committed survives (redb is crash-safe). Nothing secret is stored: keys
//! are named by a hash (see [`crate::providers::keys::KeyRing::store_id`]).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::access::virtual_keys::{UsageWindow, VirtualKeys};
use crate::live::LiveCell;
use crate::ops::stats::UsageTotals;
use crate::ops::store::{Store, StoreError, Table};
use crate::providers::Registry;

/// How often counters are committed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

fn vk_store_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Restores virtual-key usage for the keys now loaded.
pub fn restore_virtual_keys(store: &Store, keys: &VirtualKeys) -> Result<(), StoreError> {
    let saved: Vec<(String, UsageWindow)> = store.all(Table::VirtualKeyUsage)?;
    let set = keys.current();
    let restored: Vec<(String, UsageWindow)> = set
        .keys()
        .filter_map(|k| {
            let id = vk_store_id(&k.id);
            saved.iter().find(|(s, _)| *s == id).map(|(_, w)| (k.id.clone(), w.clone()))
        })
        .collect();
    keys.import_usage(restored);
    Ok(())
}

/// Restores per-provider token usage.
pub fn restore_provider_usage(store: &Store, registry: &Registry) -> Result<(), StoreError> {
    for p in &registry.providers {
        if let Some(saved) = store.get::<Vec<(u64, UsageTotals)>>(Table::ProviderUsage, &p.id)? {
            p.stats.usage.import(&saved);
        }
    }
    Ok(())
}

/// Stages every counter and commits them in one transaction.
pub fn snapshot(virtual_keys: &VirtualKeys, registry: &Registry, store: &Store) -> Result<usize, StoreError> {
    for (id, window) in virtual_keys.export_usage() {
        store.stage(Table::VirtualKeyUsage, &vk_store_id(&id), &window)?;
    }
    for p in &registry.providers {
        for (scope, keys) in p.key_rings() {
            for (id, state) in keys.export_state(&scope) {
                store.stage(Table::KeyWindows, &id, &state)?;
            }
        }
        store.stage(Table::ProviderUsage, &p.id, &p.stats.usage.export())?;
    }
    store.flush()
}

/// Commits a snapshot every [`SNAPSHOT_EVERY`] until the virtual keys or the
/// live configuration are dropped (with the gateway that holds them).
pub fn spawn_snapshots(virtual_keys: &Arc<VirtualKeys>, live: &Arc<LiveCell>, store: Arc<Store>) {
    let (keys, live) = (Arc::downgrade(virtual_keys), Arc::downgrade(live));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(keys), Some(live)) = (keys.upgrade(), live.upgrade()) else { break };
            let (registry, store) = (live.load().registry.clone(), store.clone());
            // redb commits fsync: keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || snapshot(&keys, &registry, &store)).await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot persist counters"),
                Err(e) => tracing::error!(error = %e, "counter snapshot task failed"),
            }
        }
    });
}
