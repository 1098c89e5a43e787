//! Exact caps across the fleet: each decision is one script ([`scripts`])
//! run in one round trip, so three instances receiving 90 concurrent
//! requests against a cap of 30 let exactly 30 through.
//!
//! - virtual keys: [`Fleet::admit_virtual_key`] counts the request in the
//!   key's rolling 24 h before it is routed; the ticket's settle adds the
//!   tokens and its release takes the request back
//!   ([`Fleet::adjust_virtual_key`]);
//! - provider keys: the local ring picks a key as always, then
//!   [`Fleet::reserve_provider_key`] confirms the reservation in the
//!   fleet's minute and day windows, or says how long the key is full;
//! - identifier and per-IP limits: [`Fleet::check_identifier`].
//!
//! A call that gets no answer returns an error (the link goes down): the
//! caller applies `on_redis_error`. Adjustments (settle, release) never
//! make a request wait: they are summed per window and bucket and written
//! together shortly after ([`settlements`](super::settlements)), and one that cannot be
//! written is kept as a delta ([`deltas`](super::deltas)) and merged when Redis is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use freellm_limits::identifier::{Decision, IdentifierLimit};
use freellm_limits::quota::{Limits, WindowUse};
use sha2::{Digest, Sha256};

use super::deltas::{Counter, Delta};
use super::scripts;
use super::settlements::{Account, Added, SETTLE_DELAY};
use super::{Fleet, FleetError, RedisClient};

/// A virtual key's admission by the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualKeyVerdict {
    /// Counted in the bucket (minute since the epoch) it names.
    Admitted {
        /// The minute bucket the request was counted in.
        bucket: i64,
    },
    /// The request cap is reached.
    RequestCap,
    /// The token cap is reached.
    TokenCap,
}

/// The Redis items of a provider key's health that its reservation reads
/// (ids under `<prefix>health:`, as [`crate::fleet::health`] names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHealthItems {
    /// The key's rest in the ring it is picked from.
    pub cool: String,
    /// The key found invalid.
    pub invalid: String,
}

/// A provider key's reservation by the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Counted in these buckets (second, minute since the epoch).
    Reserved {
        /// The minute window's bucket (seconds).
        minute_bucket: i64,
        /// The day window's bucket (minutes).
        day_bucket: i64,
    },
    /// The fleet rests the key, or a window is full, for about this long.
    Full {
        /// Milliseconds until the request would fit.
        wait_ms: u64,
    },
}

fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A short hashed name for a client-chosen bucket (identifier or IP).
fn hashed(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..16])
}

/// A sliding-window limit's `{admitted, remaining, reset ms}` in `reply`,
/// from index `from`.
fn decision_at(reply: &[i64], from: usize) -> Decision {
    let at = |i: usize| reply.get(from + i).copied().unwrap_or(0).max(0) as u64;
    Decision { allowed: at(0) == 1, remaining: at(1) as u32, reset_ms: at(2) }
}

/// What the adjustment scripts take for "the bucket current at the write".
const CURRENT_BUCKET: i64 = -1;

/// Adds `delta` to a provider key's minute and day windows in `buckets`
/// (a settlement) or the current ones (a delta's merge).
async fn adjust_provider_key_windows(
    c: &RedisClient,
    store_id: &str,
    (minute, day): (i64, i64),
    delta: Delta,
) -> Result<(), FleetError> {
    let keys = [c.key("pk:m", store_id), c.key("pk:d", store_id)];
    c.run::<i64, _>(&scripts::PROVIDER_KEY_ADJUST, &keys, &[minute, day, delta.requests, delta.tokens]).await.map(drop)
}

/// Adds `delta` to a virtual key's window in `bucket` (or the current one).
async fn adjust_virtual_key_window(c: &RedisClient, handle: &str, bucket: i64, delta: Delta) -> Result<(), FleetError> {
    let args = [bucket, delta.requests, delta.tokens];
    c.run::<Vec<i64>, _>(&scripts::VIRTUAL_KEY_ADJUST, &[c.key("vk", handle)], &args).await.map(drop)
}

impl Fleet {
    /// Counts one request of virtual key `handle` if its caps allow it.
    pub async fn admit_virtual_key(
        &self,
        handle: &str,
        request_cap: Option<u64>,
        token_cap: Option<u64>,
    ) -> Result<VirtualKeyVerdict, FleetError> {
        let args = [limit_arg(request_cap), limit_arg(token_cap)];
        let reply: Vec<i64> = self
            .call(
                |c: RedisClient| async move { c.run(&scripts::VIRTUAL_KEY_ADMIT, &[c.key("vk", handle)], &args).await },
            )
            .await?;
        Ok(match reply.as_slice() {
            [1, _, _, bucket, ..] => VirtualKeyVerdict::Admitted { bucket: *bucket },
            [0, _, _, _, 2] => VirtualKeyVerdict::TokenCap,
            _ => VirtualKeyVerdict::RequestCap,
        })
    }

    /// Settles `delta` on virtual key `handle` (in `bucket`, or the one
    /// current at the write): written with the others pending
    /// ([`settlements`](super::settlements)), kept as a delta when Redis does not take it.
    pub fn adjust_virtual_key(self: &Arc<Self>, handle: String, bucket: Option<i64>, delta: Delta) {
        self.settle(Account::VirtualKey { handle, bucket }, delta);
    }

    /// A virtual key's `(requests, tokens)` in the fleet's rolling 24 h.
    pub async fn virtual_key_usage(&self, handle: &str) -> Result<(u64, u64), FleetError> {
        let reply: Vec<i64> = self
            .call(|c: RedisClient| async move {
                c.run(&scripts::WINDOW_USAGE, &[c.key("vk", handle)], &[60_000i64, 1440]).await
            })
            .await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok((at(0), at(1)))
    }

    /// Reserves one request of `estimated_tokens` on provider key
    /// `store_id` in the fleet's windows, if `limits` allow it and the
    /// fleet's health of the key (`health`: its rest and invalid items)
    /// does not refuse it.
    pub async fn reserve_provider_key(
        &self,
        store_id: &str,
        health: &KeyHealthItems,
        limits: &Limits,
        estimated_tokens: u32,
    ) -> Result<KeyVerdict, FleetError> {
        let arg = |l: Option<u32>| limit_arg(l.map(u64::from));
        let args = [
            arg(limits.requests_per_minute),
            arg(limits.requests_per_day),
            arg(limits.tokens_per_minute),
            arg(limits.tokens_per_day),
            i64::from(estimated_tokens),
        ];
        let reply: Vec<i64> = self
            .call(|c: RedisClient| async move {
                let keys = [
                    c.key("pk:m", store_id),
                    c.key("pk:d", store_id),
                    c.key("health", &health.cool),
                    c.key("health", &health.invalid),
                ];
                c.run(&scripts::PROVIDER_KEY_RESERVE, &keys, &args).await
            })
            .await?;
        Ok(match reply.as_slice() {
            [1, minute_bucket, day_bucket, ..] => {
                KeyVerdict::Reserved { minute_bucket: *minute_bucket, day_bucket: *day_bucket }
            }
            [_, wait, ..] => KeyVerdict::Full { wait_ms: (*wait).max(1) as u64 },
            _ => KeyVerdict::Full { wait_ms: 1_000 },
        })
    }

    /// Settles `delta` on provider key `store_id` in the `buckets` (minute,
    /// day) its reservation was counted in: written with the others pending
    /// ([`settlements`](super::settlements)), kept as a delta when Redis does not take it.
    pub fn adjust_provider_key(self: &Arc<Self>, store_id: String, buckets: (i64, i64), delta: Delta) {
        self.settle(Account::ProviderKey { store_id, buckets }, delta);
    }

    fn settle(self: &Arc<Self>, account: Account, delta: Delta) {
        let Some(shared) = &self.shared else { return };
        let added = shared.settlements().add(account, delta);
        match added {
            Added::First => {
                let fleet = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    fleet.flush_settlements().await;
                });
            }
            Added::Alone(account) => {
                let fleet = self.clone();
                tokio::spawn(async move { fleet.write_settlement(account, delta).await });
            }
            Added::Joined | Added::Nothing => {}
        }
    }

    /// Writes every pending settlement now, together (pipelined on the one
    /// connection): after the delay, and at shutdown.
    pub async fn flush_settlements(&self) {
        let Some(shared) = &self.shared else { return };
        let pending = shared.settlements().take();
        futures_util::future::join_all(
            pending.into_iter().map(|(account, delta)| self.write_settlement(account, delta)),
        )
        .await;
    }

    async fn write_settlement(&self, account: Account, delta: Delta) {
        let written = match &account {
            Account::ProviderKey { store_id, buckets } => {
                self.call(
                    |c: RedisClient| async move { adjust_provider_key_windows(&c, store_id, *buckets, delta).await },
                )
                .await
            }
            Account::VirtualKey { handle, bucket } => {
                let bucket = bucket.unwrap_or(CURRENT_BUCKET);
                self.call(|c: RedisClient| async move { adjust_virtual_key_window(&c, handle, bucket, delta).await })
                    .await
            }
        };
        if written.is_err() {
            let counter = match account {
                Account::ProviderKey { store_id, .. } => Counter::ProviderKey(store_id),
                Account::VirtualKey { handle, .. } => Counter::VirtualKey(handle),
            };
            self.keep_delta(counter, delta);
        }
    }

    /// A provider key's use of the fleet's windows.
    pub async fn provider_key_usage(&self, store_id: &str) -> Result<WindowUse, FleetError> {
        let (minute, day) = self
            .call(|c: RedisClient| async move {
                let minute: Vec<i64> =
                    c.run(&scripts::WINDOW_USAGE, &[c.key("pk:m", store_id)], &[1_000i64, 60]).await?;
                let day: Vec<i64> =
                    c.run(&scripts::WINDOW_USAGE, &[c.key("pk:d", store_id)], &[60_000i64, 1440]).await?;
                Ok((minute, day))
            })
            .await?;
        let at = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(WindowUse {
            requests_minute: at(&minute, 0),
            tokens_minute: at(&minute, 1),
            requests_day: at(&day, 0),
            tokens_day: at(&day, 1),
        })
    }

    /// Checks and records one request of `name` (an identifier, or
    /// `ip:<addr>`) against `limit` in the fleet. `kind` keeps the per-IP
    /// and identifier limits apart (`ip`, `id`).
    pub async fn check_identifier(
        &self,
        kind: &'static str,
        name: &str,
        limit: IdentifierLimit,
    ) -> Result<Decision, FleetError> {
        let bucket = hashed(name);
        let member = self.unique_member();
        let reply: Vec<i64> = self
            .call(|c: RedisClient| async move {
                let args = [limit.max.to_string(), limit.window_ms.to_string(), member, "0".to_owned()];
                c.run(&scripts::IDENTIFIER_CHECK, &[c.key(kind, &bucket)], &args).await
            })
            .await?;
        Ok(decision_at(&reply, 0))
    }

    /// Checks and records one request against a client's per-IP limit
    /// (`ip`: `ip:<addr>` and its limit) and then its identifier's, in one
    /// round trip; the identifier does not count a request its IP's limit
    /// refused. Returns the IP's decision and, unless it refused, the
    /// identifier's.
    pub async fn check_client_limits(
        &self,
        ip: (&str, IdentifierLimit),
        identifier: (&str, IdentifierLimit),
    ) -> Result<(Decision, Option<Decision>), FleetError> {
        let (ip_bucket, id_bucket) = (hashed(ip.0), hashed(identifier.0));
        let member = self.unique_member();
        let reply: Vec<i64> = self
            .call(|c: RedisClient| async move {
                let keys = [c.key("ip", &ip_bucket), c.key("id", &id_bucket)];
                let args = [
                    ip.1.max.to_string(),
                    ip.1.window_ms.to_string(),
                    identifier.1.max.to_string(),
                    identifier.1.window_ms.to_string(),
                    member,
                ];
                c.run(&scripts::CLIENT_LIMITS, &keys, &args).await
            })
            .await?;
        let ip = decision_at(&reply, 0);
        Ok((ip, ip.allowed.then(|| decision_at(&reply, 3))))
    }

    /// Keeps a request counted locally while degraded, to merge later.
    pub fn keep_identifier_count(&self, kind: &'static str, name: &str, limit: IdentifierLimit) {
        let bucket = format!("{kind}:{}", hashed(name));
        self.keep_delta(
            Counter::Identifier { bucket, max: limit.max, window_ms: limit.window_ms },
            Delta { requests: 1, tokens: 0 },
        );
    }

    /// A member no other request of the fleet uses: `<instance>:<n>`.
    fn unique_member(&self) -> String {
        let n = self.shared.as_ref().map_or(0, |s| s.seq.fetch_add(1, Ordering::Relaxed));
        format!("{}:{n}", self.instance_id)
    }

    /// Keeps `delta` for the merge after the outage.
    pub fn keep_delta(&self, counter: Counter, delta: Delta) {
        if let Some(shared) = &self.shared {
            shared.deltas.lock().unwrap_or_else(|e| e.into_inner()).add(counter, delta);
        }
    }

    /// Writes the deltas kept while degraded, one script each; what fails
    /// is kept for the next time. Returns how many were merged.
    pub(super) async fn merge_deltas(&self) -> usize {
        let Some(shared) = &self.shared else { return 0 };
        let pending = shared.deltas.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut merged = 0;
        let mut left = Vec::new();
        for (counter, delta) in pending {
            let client = shared.client.clone();
            let written = match &counter {
                Counter::VirtualKey(handle) => adjust_virtual_key_window(&client, handle, CURRENT_BUCKET, delta).await,
                Counter::ProviderKey(store_id) => {
                    adjust_provider_key_windows(&client, store_id, (CURRENT_BUCKET, CURRENT_BUCKET), delta).await
                }
                Counter::Identifier { bucket, max, window_ms } => {
                    let (kind, hash) = bucket.split_once(':').unwrap_or(("id", bucket));
                    let member = self.unique_member();
                    let n = delta.requests.max(0);
                    let args = [max.to_string(), window_ms.to_string(), member, n.to_string()];
                    client
                        .run::<Vec<i64>, _>(&scripts::IDENTIFIER_CHECK, &[client.key(kind, hash)], &args)
                        .await
                        .map(drop)
                }
            };
            match written {
                Ok(()) => merged += 1,
                Err(_) => left.push((counter, delta)),
            }
        }
        if !left.is_empty() {
            let mut deltas = shared.deltas.lock().unwrap_or_else(|e| e.into_inner());
            for (counter, delta) in left {
                deltas.add(counter, delta);
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests;
