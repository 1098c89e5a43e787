use super::*;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Usage {
    requests: u64,
    tokens: u64,
}

fn usage(requests: u64) -> Usage {
    Usage { requests, tokens: requests * 10 }
}

#[test]
fn error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<StoreError>();
    check::<Store>();
}

#[test]
fn table_names_are_distinct() {
    let mut names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Table::ALL.len());
    for (i, table) in Table::ALL.iter().enumerate() {
        assert_eq!(table.index(), i);
    }
}

#[test]
fn round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_now(Table::VirtualKeyUsage, "vk-1", &usage(3)).unwrap();
        store.stage(Table::ProviderUsage, "groq", &usage(7)).unwrap();
        store.stage(Table::KeyWindows, "groq#0", &vec![1u64, 2, 3]).unwrap();
        assert_eq!(store.flush().unwrap(), 2);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "vk-1").unwrap(), Some(usage(3)));
    assert_eq!(store.get::<Usage>(Table::ProviderUsage, "groq").unwrap(), Some(usage(7)));
    assert_eq!(store.get::<Vec<u64>>(Table::KeyWindows, "groq#0").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "missing").unwrap(), None);
    assert_eq!(store.get::<u32>(Table::Meta, SCHEMA_VERSION_KEY).unwrap(), Some(SCHEMA_VERSION));
}

#[test]
fn staged_values_are_readable_but_not_on_disk_until_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.stage(Table::VirtualKeyUsage, "vk", &usage(1)).unwrap();
    assert_eq!(store.pending_len(), 1);
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "vk").unwrap(), Some(usage(1)));
    assert_eq!(store.read_committed(Table::VirtualKeyUsage, "vk").unwrap(), None);

    assert_eq!(store.flush().unwrap(), 1);
    assert_eq!(store.pending_len(), 0);
    assert!(store.read_committed(Table::VirtualKeyUsage, "vk").unwrap().is_some());
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "vk").unwrap(), Some(usage(1)));
    // Nothing pending: a no-op.
    assert_eq!(store.flush().unwrap(), 0);
}

#[test]
fn last_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..10 {
            store.stage(Table::ProviderUsage, "p", &usage(n)).unwrap();
        }
        assert_eq!(store.pending_len(), 1);
        assert_eq!(store.get::<Usage>(Table::ProviderUsage, "p").unwrap(), Some(usage(9)));
        assert_eq!(store.flush().unwrap(), 1);
        // A staged value overrides the committed one.
        store.stage(Table::ProviderUsage, "p", &usage(42)).unwrap();
        assert_eq!(store.get::<Usage>(Table::ProviderUsage, "p").unwrap(), Some(usage(42)));
        store.flush().unwrap();
        // put_now supersedes an older staged value, which a later flush must not resurrect.
        store.stage(Table::ProviderUsage, "p", &usage(1)).unwrap();
        store.put_now(Table::ProviderUsage, "p", &usage(100)).unwrap();
        assert_eq!(store.pending_len(), 0);
        assert_eq!(store.flush().unwrap(), 0);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get::<Usage>(Table::ProviderUsage, "p").unwrap(), Some(usage(100)));
}

#[test]
fn all_merges_pending_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.stage(Table::VirtualKeyUsage, "a", &usage(1)).unwrap();
    store.stage(Table::VirtualKeyUsage, "b", &usage(2)).unwrap();
    store.flush().unwrap();
    store.stage(Table::VirtualKeyUsage, "b", &usage(20)).unwrap();
    store.stage(Table::VirtualKeyUsage, "c", &usage(3)).unwrap();
    store.stage(Table::ProviderUsage, "other-table", &usage(9)).unwrap();

    let all = store.all::<Usage>(Table::VirtualKeyUsage).unwrap();
    assert_eq!(all, vec![("a".to_owned(), usage(1)), ("b".to_owned(), usage(20)), ("c".to_owned(), usage(3)),]);
    assert!(store.all::<Usage>(Table::KeyWindows).unwrap().is_empty());
}

#[test]
fn all_meta_hides_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.all::<String>(Table::Meta).unwrap().is_empty());
    store.put_now(Table::Meta, "instance", "abc").unwrap();
    assert_eq!(store.all::<String>(Table::Meta).unwrap(), vec![("instance".to_owned(), "abc".to_owned())]);
}

#[test]
fn remove_deletes_committed_and_staged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_now(Table::VirtualKeyUsage, "gone", &usage(1)).unwrap();
        store.put_now(Table::VirtualKeyUsage, "kept", &usage(2)).unwrap();
        store.stage(Table::VirtualKeyUsage, "staged", &usage(3)).unwrap();

        assert!(store.remove(Table::VirtualKeyUsage, "gone").unwrap());
        assert!(store.remove(Table::VirtualKeyUsage, "staged").unwrap());
        assert!(!store.remove(Table::VirtualKeyUsage, "never").unwrap());
        assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "gone").unwrap(), None);
        assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "staged").unwrap(), None);
        // The removed staged value must not come back with a flush.
        assert_eq!(store.flush().unwrap(), 0);
    }
    let store = Store::open(dir.path()).unwrap();
    let all = store.all::<Usage>(Table::VirtualKeyUsage).unwrap();
    assert_eq!(all, vec![("kept".to_owned(), usage(2))]);
}

#[test]
fn reserved_schema_key_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for result in [
        store.stage(Table::Meta, SCHEMA_VERSION_KEY, &99u32),
        store.put_now(Table::Meta, SCHEMA_VERSION_KEY, &99u32),
        store.remove(Table::Meta, SCHEMA_VERSION_KEY).map(|_| ()),
    ] {
        assert!(matches!(result, Err(StoreError::ReservedKey { .. })), "{result:?}");
    }
    // The same key in another table is an ordinary key.
    store.stage(Table::KeyWindows, SCHEMA_VERSION_KEY, &1u8).unwrap();
}

#[test]
fn decode_error_names_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_now(Table::ProviderUsage, "p", "not a usage").unwrap();
    let error = store.get::<Usage>(Table::ProviderUsage, "p").unwrap_err();
    assert!(matches!(error, StoreError::Decode { .. }), "{error:?}");
    assert!(error.to_string().contains("provider_usage/p"), "{error}");
    assert!(store.all::<Usage>(Table::ProviderUsage).is_err());
}

#[test]
fn open_creates_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b").join("data");
    let store = Store::open(&nested).unwrap();
    assert!(nested.is_dir());
    assert_eq!(store.path(), nested.join(FILE_NAME));
    assert!(store.path().is_file());
}

#[test]
fn open_fails_when_data_dir_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let error = Store::open(&file).unwrap_err();
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(error.to_string().contains(&file.display().to_string()), "{error}");
}

#[test]
fn garbage_file_is_an_error_naming_the_path() {
    let samples: [&[u8]; 2] = [b"this is not a redb database\n", &[0xA5; 8192]];
    for garbage in samples {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, garbage).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()), "{error}");
        // The file is left untouched.
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }
}

#[test]
fn corrupted_store_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..200u32 {
            store.stage(Table::KeyWindows, &format!("p#{i}"), &vec![i; 50]).unwrap();
        }
        store.flush().unwrap();
    }
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192);
    // Keep the header page, scramble every page after it.
    for byte in &mut bytes[4096..] {
        *byte ^= 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    assert!(error.to_string().contains(FILE_NAME), "{error}");
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let newer = serde_json::to_vec(&(SCHEMA_VERSION + 1)).unwrap();
        store.write_one(Table::Meta, SCHEMA_VERSION_KEY, Some(&newer)).unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    match &error {
        StoreError::SchemaTooNew { found, supported, path } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
            assert_eq!(path, &dir.path().join(FILE_NAME));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains(FILE_NAME), "{error}");
}

#[test]
fn invalid_schema_record_is_refused() {
    for bad in [&b"\"one\""[..], b"0", b"-1"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write_one(Table::Meta, SCHEMA_VERSION_KEY, Some(bad)).unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::SchemaInvalid { .. }), "{error:?}");
    }
}

#[test]
fn concurrent_staging_then_one_flush() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let key = format!("vk-{t}-{i}");
                        store.stage(Table::VirtualKeyUsage, &key, &usage(i as u64)).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.flush().unwrap(), THREADS * PER_THREAD);
    }
    let store = Store::open(dir.path()).unwrap();
    let all = store.all::<Usage>(Table::VirtualKeyUsage).unwrap();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    for t in 0..THREADS {
        for i in [0, PER_THREAD / 2, PER_THREAD - 1] {
            let key = format!("vk-{t}-{i}");
            assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, &key).unwrap(), Some(usage(i as u64)));
        }
    }
}

#[test]
fn staging_during_flushes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    std::thread::scope(|scope| {
        let stager = scope.spawn(|| {
            for i in 0..2000u64 {
                store.stage(Table::ProviderUsage, &format!("k{}", i % 50), &i).unwrap();
                // Read-your-writes holds even while a flush is committing.
                let seen = store.get::<u64>(Table::ProviderUsage, &format!("k{}", i % 50)).unwrap();
                assert_eq!(seen, Some(i));
            }
        });
        while !stager.is_finished() {
            store.flush().unwrap();
        }
    });
    store.flush().unwrap();
    for k in 0..50u64 {
        let expected = 1950 + k;
        assert_eq!(
            store.read_committed(Table::ProviderUsage, &format!("k{k}")).unwrap(),
            Some(expected.to_string().into_bytes())
        );
    }
}

#[test]
fn committed_data_survives_drop_without_shutdown_but_staged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.stage(Table::VirtualKeyUsage, "flushed", &usage(1)).unwrap();
        store.stage(Table::VirtualKeyUsage, "overwritten", &usage(2)).unwrap();
        store.flush().unwrap();
        store.put_now(Table::Meta, "admin", &true).unwrap();
        // Staged after the last flush, then "crash": drop with no flush.
        store.stage(Table::VirtualKeyUsage, "unflushed", &usage(3)).unwrap();
        store.stage(Table::VirtualKeyUsage, "overwritten", &usage(99)).unwrap();
        assert_eq!(store.pending_len(), 2);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "flushed").unwrap(), Some(usage(1)));
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "overwritten").unwrap(), Some(usage(2)));
    assert_eq!(store.get::<bool>(Table::Meta, "admin").unwrap(), Some(true));
    assert_eq!(store.get::<Usage>(Table::VirtualKeyUsage, "unflushed").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flusher_persists_within_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let flusher = Arc::clone(&store).spawn_flusher(Duration::from_millis(50));
    store.stage(Table::ProviderUsage, "groq", &usage(5)).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    while store.read_committed(Table::ProviderUsage, "groq").unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "flusher did not persist within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.pending_len(), 0);

    // Dropping the last strong reference stops the flusher by itself.
    drop(store);
    tokio::time::timeout(Duration::from_millis(400), flusher)
        .await
        .expect("flusher ends once the store is dropped")
        .unwrap();

    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.get::<Usage>(Table::ProviderUsage, "groq").unwrap(), Some(usage(5)));
}
