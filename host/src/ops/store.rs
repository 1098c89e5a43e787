//! Embedded persistent store: keeps usage counters across restarts.
//!
//! One [redb] file, `<data_dir>/freellm.redb`, holds four string-keyed
//! tables ([`Table`]); every value is a serde JSON blob, so the store knows
//! nothing about the types it keeps. Keys must never contain secrets (use an
//! index or a hash of a provider key, not the key itself).
//!
//! # Writes
//!
//! The request path calls [`Store::stage`], which only serializes the value
//! and puts it in an in-memory pending map (the last write per key wins;
//! a mutex is held for a map insert). [`Store::flush`] writes everything
//! pending in **one** redb write transaction and commits it durably (fsync).
//! [`Store::spawn_flusher`] calls `flush` on a fixed interval (the gateway
//! uses 1 s), and the binary calls `flush` once more on graceful shutdown.
//! Rare administrative changes use [`Store::put_now`] and [`Store::remove`],
//! which are durable when they return.
//!
//! Reads ([`Store::get`], [`Store::all`]) see staged values too
//! (read-your-writes), including those of a flush that is still committing.
//!
//! # Durability guarantee
//!
//! * Everything committed — by a `flush` that returned `Ok`, by `put_now`,
//!   or by `remove` — survives a crash, a `SIGKILL` or a power cut: redb is
//!   ACID and crash-safe, and each commit is made with immediate durability.
//! * A `SIGKILL` (or a drop of the [`Store`] without a final `flush`) loses
//!   exactly the updates staged since the last successful flush, i.e. at
//!   most one flush interval of counts. Nothing older is ever lost.
//! * A flush that fails leaves its entries pending (unless newer values were
//!   staged meanwhile), so the next flush retries them.
//! * The store never discards a file it cannot read: a corrupt, foreign,
//!   locked or newer-schema `freellm.redb` makes [`Store::open`] fail with
//!   an error naming the path, and the binary refuses to start.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "freellm.redb";

/// Schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Key in [`Table::Meta`] holding the schema version (a JSON number).
///
/// It is reserved: writing or removing it through the public API fails with
/// [`StoreError::ReservedKey`], and [`Store::all`] leaves it out.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Upper bound of redb's page cache; the store is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Usage per virtual key, keyed by virtual key id.
    VirtualKeyUsage,
    /// Sliding rate-limit windows per provider key, keyed by a non-secret
    /// identifier such as `"<provider>#<index>"`.
    KeyWindows,
    /// Token usage buckets per provider.
    ProviderUsage,
    /// Store metadata (schema version) and other small singletons.
    Meta,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 4] = [Table::VirtualKeyUsage, Table::KeyWindows, Table::ProviderUsage, Table::Meta];

    /// Name of the redb table backing this variant.
    pub const fn name(self) -> &'static str {
        match self {
            Table::VirtualKeyUsage => "virtual_key_usage",
            Table::KeyWindows => "key_windows",
            Table::ProviderUsage => "provider_usage",
            Table::Meta => "meta",
        }
    }

    const fn index(self) -> usize {
        match self {
            Table::VirtualKeyUsage => 0,
            Table::KeyWindows => 1,
            Table::ProviderUsage => 2,
            Table::Meta => 3,
        }
    }

    const fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the store. Every variant that concerns the file names its path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create store directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is locked by another process or another open [`Store`].
    #[error(
        "store file {} is locked: another freellm process (or store instance) is using this data directory",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file exists but could not be opened: corrupt, not a redb
    /// database, unreadable, or written by an incompatible redb.
    #[error(
        "cannot open store file {}: {source}; refusing to start rather than discard it \
         (move the file aside to start with empty usage)",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying redb error.
        source: Box<redb::Error>,
    },
    /// The file was written by a newer freellm with an unknown schema.
    #[error(
        "store file {} has schema version {found}, but this build supports at most {supported}; \
         refusing to open it (upgrade freellm)",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Version recorded in the file.
        found: u32,
        /// [`SCHEMA_VERSION`] of this build.
        supported: u32,
    },
    /// The schema version record exists but is not a valid version.
    #[error("store file {} has an invalid schema version record: {detail}", path.display())]
    SchemaInvalid {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A redb operation failed after the store was opened.
    #[error("store file {}: {op} failed: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// The operation that failed.
        op: &'static str,
        /// The underlying redb error.
        source: Box<redb::Error>,
    },
    /// A value could not be serialized to JSON.
    #[error("cannot encode value for {table}/{key}: {source}")]
    Encode {
        /// Target table.
        table: Table,
        /// Target key.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A stored value could not be deserialized into the requested type.
    #[error("cannot decode stored value {table}/{key}: {source}")]
    Decode {
        /// Table of the value.
        table: Table,
        /// Key of the value.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The key is reserved for the store's own bookkeeping.
    #[error("key {key:?} of table {table} is reserved by the store")]
    ReservedKey {
        /// Table of the key.
        table: Table,
        /// The reserved key.
        key: String,
    },
}

/// Serialized values per table, indexed by [`Table::index`].
type Batch = [HashMap<String, Vec<u8>>; 4];

#[derive(Default)]
struct Buffers {
    /// Staged values not yet handed to a flush.
    pending: Batch,
    /// The batch a running flush is committing; readers consult it so a
    /// value never disappears between leaving `pending` and being committed.
    inflight: Option<Arc<Batch>>,
}

/// The persistent store. Share it as `Arc<Store>`; every method takes `&self`.
pub struct Store {
    db: Database,
    path: PathBuf,
    buffers: Mutex<Buffers>,
    /// Serializes every write transaction together with its hand-off of
    /// pending entries, so a staged value can never overwrite a later
    /// `put_now`/`remove` of the same key.
    write_lock: Mutex<()>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("pending", &self.pending_len()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_writable(table: Table, key: &str) -> Result<(), StoreError> {
    if table == Table::Meta && key == SCHEMA_VERSION_KEY {
        return Err(StoreError::ReservedKey { table, key: key.to_owned() });
    }
    Ok(())
}

fn encode<T: Serialize + ?Sized>(table: Table, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { table, key: key.to_owned(), source })
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { table, key: key.to_owned(), source })
}

/// Puts `batch` back into `pending`, keeping any value staged meanwhile.
fn restore(pending: &mut Batch, batch: Batch) {
    for (target, entries) in pending.iter_mut().zip(batch) {
        for (key, value) in entries {
            target.entry(key).or_insert(value);
        }
    }
}

impl Store {
    /// Opens (or creates) `<data_dir>/freellm.redb`, creating `data_dir` if
    /// needed, and checks or records the schema version.
    ///
    /// The whole file is integrity-checked on open. Fails with an error
    /// naming the path if the file is locked, corrupt, not a redb database,
    /// or has a schema newer than [`SCHEMA_VERSION`]; the file is never
    /// replaced or truncated.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::CreateDir { path: data_dir.to_path_buf(), source })?;
        let path = data_dir.join(FILE_NAME);
        let db =
            Database::builder().set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true).create(&path).map_err(
                |error| match error {
                    DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
                    other => StoreError::Open { path: path.clone(), source: Box::new(other.into()) },
                },
            )?;
        let store = Store { db, path, buffers: Mutex::new(Buffers::default()), write_lock: Mutex::new(()) };
        store.init_schema()?;
        Ok(store)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of staged entries not yet committed by a flush.
    pub fn pending_len(&self) -> usize {
        lock(&self.buffers).pending.iter().map(HashMap::len).sum()
    }

    /// Stages `value` under `key`; it becomes durable at the next
    /// [`flush`](Self::flush). The last value staged for a key wins.
    ///
    /// Cheap enough for the request path: serialization happens before the
    /// lock is taken, and the lock covers one map insert. Fails only if the
    /// value cannot be serialized or the key is reserved.
    pub fn stage<T: Serialize + ?Sized>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        check_writable(table, key)?;
        let bytes = encode(table, key, value)?;
        let mut buffers = lock(&self.buffers);
        let map = &mut buffers.pending[table.index()];
        match map.get_mut(key) {
            Some(slot) => *slot = bytes,
            None => {
                map.insert(key.to_owned(), bytes);
            }
        }
        Ok(())
    }

    /// Writes every staged entry in one write transaction and commits it
    /// durably. Returns how many entries were written (0 without touching
    /// the file when nothing is pending).
    ///
    /// Blocking (it waits for fsync): from async code call it through
    /// `tokio::task::spawn_blocking`. On failure the entries stay pending.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let _write = lock(&self.write_lock);
        let batch = {
            let mut buffers = lock(&self.buffers);
            if buffers.pending.iter().all(HashMap::is_empty) {
                return Ok(0);
            }
            let batch = Arc::new(std::mem::take(&mut buffers.pending));
            buffers.inflight = Some(Arc::clone(&batch));
            batch
        };
        let count = batch.iter().map(HashMap::len).sum();
        let result = self.commit_batch(&batch);
        let mut buffers = lock(&self.buffers);
        buffers.inflight = None;
        match result {
            Ok(()) => Ok(count),
            Err(error) => {
                let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                restore(&mut buffers.pending, batch);
                Err(error)
            }
        }
    }

    /// Spawns a task that calls [`flush`](Self::flush) every `every`
    /// (clamped to at least 1 ms) on the blocking pool, logging failures
    /// (the entries stay pending and are retried at the next tick).
    ///
    /// The task holds only a weak reference: it ends by itself once every
    /// other `Arc<Store>` is dropped. For a graceful shutdown call `flush`
    /// once more after stopping the request path; aborting the handle is
    /// optional. Must be called inside a tokio runtime.
    pub fn spawn_flusher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self);
        drop(self);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes immediately.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else { break };
                if store.pending_len() == 0 {
                    continue;
                }
                match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(Ok(count)) => tracing::trace!(count, "store flushed"),
                    Ok(Err(error)) => tracing::warn!(%error, "store flush failed; retrying next tick"),
                    Err(error) => tracing::error!(%error, "store flush task failed"),
                }
            }
        })
    }

    /// Writes `value` under `key` immediately and durably (its own write
    /// transaction), superseding any staged value for that key. For rare
    /// administrative changes; the request path uses [`stage`](Self::stage).
    pub fn put<T: Serialize + ?Sized>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.put_now(table, key, value)
    }

    /// Same as [`put`](Self::put): writes `value` durably before returning.
    pub fn put_now<T: Serialize + ?Sized>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        check_writable(table, key)?;
        let bytes = encode(table, key, value)?;
        self.write_one(table, key, Some(&bytes)).map(|_| ())
    }

    /// Removes `key` durably, together with any staged value for it.
    /// Returns whether a value (committed or staged) existed.
    pub fn remove(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        check_writable(table, key)?;
        self.write_one(table, key, None)
    }

    /// Reads the value of `key`: the staged one if any, else the committed
    /// one. `Ok(None)` if absent; [`StoreError::Decode`] if the stored JSON
    /// does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        let bytes = match self.buffered(table, key) {
            Some(bytes) => Some(bytes),
            None => self.read_committed(table, key)?,
        };
        bytes.map(|bytes| decode(table, key, &bytes)).transpose()
    }

    /// All entries of `table`, committed merged with staged (staged wins),
    /// sorted by key. In [`Table::Meta`] the reserved
    /// [`SCHEMA_VERSION_KEY`] is left out. Fails on the first value that
    /// does not decode as `T`, naming its key, rather than dropping it.
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        // Snapshot the buffers first: anything not in them was committed
        // before the snapshot, so the read below sees it.
        let overlay: Vec<(String, Vec<u8>)> = {
            let buffers = lock(&self.buffers);
            let inflight = buffers.inflight.iter().flat_map(|batch| batch[table.index()].iter());
            inflight
                .chain(buffers.pending[table.index()].iter())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
        let mut merged = self.read_all_committed(table)?;
        merged.extend(overlay);
        if table == Table::Meta {
            merged.remove(SCHEMA_VERSION_KEY);
        }
        merged
            .into_iter()
            .map(|(key, bytes)| {
                let value = decode(table, &key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

    fn db_err<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |error| StoreError::Db { path: self.path.clone(), op, source: Box::new(error.into()) }
    }

    /// Creates every table and checks (or records) the schema version.
    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.db_err("begin write"))?;
        {
            for table in Table::ALL {
                txn.open_table(table.definition()).map_err(self.db_err("create table"))?;
            }
            let mut meta = txn.open_table(Table::Meta.definition()).map_err(self.db_err("open meta table"))?;
            let recorded = meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(self.db_err("read schema version"))?
                .map(|guard| guard.value().to_vec());
            match recorded {
                None => {
                    let bytes = encode(Table::Meta, SCHEMA_VERSION_KEY, &SCHEMA_VERSION)?;
                    meta.insert(SCHEMA_VERSION_KEY, bytes.as_slice()).map_err(self.db_err("record schema version"))?;
                }
                Some(bytes) => {
                    let found: u32 = serde_json::from_slice(&bytes).map_err(|error| StoreError::SchemaInvalid {
                        path: self.path.clone(),
                        detail: format!("{:?} is not a version number: {error}", String::from_utf8_lossy(&bytes)),
                    })?;
                    if found == 0 {
                        return Err(StoreError::SchemaInvalid {
                            path: self.path.clone(),
                            detail: "version 0 does not exist".to_owned(),
                        });
                    }
                    if found > SCHEMA_VERSION {
                        return Err(StoreError::SchemaTooNew {
                            path: self.path.clone(),
                            found,
                            supported: SCHEMA_VERSION,
                        });
                    }
                    // Version 1 is the first schema: no migrations exist yet.
                }
            }
        }
        txn.commit().map_err(self.db_err("commit schema"))
    }

    fn commit_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.db_err("begin write"))?;
        for table in Table::ALL {
            let entries = &batch[table.index()];
            if entries.is_empty() {
                continue;
            }
            let mut open = txn.open_table(table.definition()).map_err(self.db_err("open table"))?;
            for (key, value) in entries {
                open.insert(key.as_str(), value.as_slice()).map_err(self.db_err("insert"))?;
            }
        }
        txn.commit().map_err(self.db_err("commit"))
    }

    /// Durably inserts (`Some`) or removes (`None`) one key in its own
    /// transaction, dropping any staged value of that key first (restored
    /// if the write fails). Returns whether a value existed before.
    fn write_one(&self, table: Table, key: &str, value: Option<&[u8]>) -> Result<bool, StoreError> {
        let _write = lock(&self.write_lock);
        // No flush runs while `write_lock` is held, so nothing is in flight.
        let staged = lock(&self.buffers).pending[table.index()].remove(key);
        let result = (|| {
            let txn = self.db.begin_write().map_err(self.db_err("begin write"))?;
            let existed = {
                let mut open = txn.open_table(table.definition()).map_err(self.db_err("open table"))?;
                match value {
                    Some(bytes) => open.insert(key, bytes).map_err(self.db_err("insert"))?.is_some(),
                    None => open.remove(key).map_err(self.db_err("remove"))?.is_some(),
                }
            };
            txn.commit().map_err(self.db_err("commit"))?;
            Ok(existed)
        })();
        match result {
            Ok(existed) => Ok(existed || staged.is_some()),
            Err(error) => {
                if let Some(bytes) = staged {
                    lock(&self.buffers).pending[table.index()].entry(key.to_owned()).or_insert(bytes);
                }
                Err(error)
            }
        }
    }

    /// The staged or in-flight value of `key`, if any.
    fn buffered(&self, table: Table, key: &str) -> Option<Vec<u8>> {
        let buffers = lock(&self.buffers);
        buffers.pending[table.index()]
            .get(key)
            .or_else(|| buffers.inflight.as_ref().and_then(|batch| batch[table.index()].get(key)))
            .cloned()
    }

    /// The committed value of `key`, ignoring staged values.
    fn read_committed(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let open = match txn.open_table(table.definition()) {
            Ok(open) => open,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.db_err("open table")(error)),
        };
        let value = open.get(key).map_err(self.db_err("read"))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// Every committed entry of `table`, ignoring staged values.
    fn read_all_committed(&self, table: Table) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let open = match txn.open_table(table.definition()) {
            Ok(open) => open,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(error) => return Err(self.db_err("open table")(error)),
        };
        let mut out = BTreeMap::new();
        for entry in open.iter().map_err(self.db_err("iterate"))? {
            let (key, value) = entry.map_err(self.db_err("iterate"))?;
            out.insert(key.value().to_owned(), value.value().to_vec());
        }
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let buffers = self.buffers.get_mut().unwrap_or_else(PoisonError::into_inner);
        let lost: usize = buffers.pending.iter().map(HashMap::len).sum();
        if lost > 0 {
            tracing::warn!(
                path = %self.path.display(),
                lost,
                "store dropped with unflushed updates; they are lost"
            );
        }
    }
}

#[cfg(test)]
mod tests;
