//! `claude-relay check`: a live self-test of a deployment. Probe records are written, read,
//! left to expire and deleted in each backend the mode uses, a probe key goes through the
//! router (create → lookup → delete) and is checked in the backend that must hold it, and
//! everything is cleaned up whatever happens. Exits non-zero when a step fails.

use std::time::Duration;

use super::ops_support;
use crate::actors::router::EntryKind;
use crate::app::Actors;
use crate::config::{Config, StorageMode};
use crate::domain::api_key::ApiKey;
use crate::domain::keys::{generate_key, hash_key};
use crate::persistence::{api_keys, ephemeral};
use secrecy::ExposeSecret;

const TTL: Duration = Duration::from_millis(1000);
const AFTER_TTL: Duration = Duration::from_millis(1300);

struct Steps {
    failed: Vec<String>,
}

impl Steps {
    fn step(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("[OK  ] {name}: {detail}"),
            Err(e) => {
                println!("[FAIL] {name}: {e}");
                self.failed.push(name.to_string());
            }
        }
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}"))
    }
}

pub async fn run(config: Config) -> Result<(), String> {
    let actors = ops_support::start(&config, None).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut s = Steps { failed: Vec::new() };
    println!("check: mode {}, probe id {id}", config.mode.as_str());
    if config.mode.uses_redis() {
        let r = redis_probe(&actors, &id).await;
        s.step("redis write/read/expire/delete", r);
    }
    if config.mode.uses_mysql() {
        let r = mysql_probe(&actors, &id).await;
        s.step("mysql write/read/expire/delete", r);
    }
    let r = entry_routing(&actors, &config, &id).await;
    s.step("routing: entries with a lifetime", r);
    let r = key_routing(&actors, &config, &id).await;
    s.step("routing: api keys", r);
    cleanup(&actors, &config, &id).await;
    if s.failed.is_empty() {
        println!("check: all steps passed, probes removed");
        Ok(())
    } else {
        Err(format!("check failed: {}", s.failed.join(", ")))
    }
}

async fn redis_probe(a: &Actors, id: &str) -> Result<String, String> {
    let c = &a.cache;
    let e = |e: crate::error::CacheError| e.to_string();
    c.probe_set(id, "written", TTL).await.map_err(e)?;
    expect(
        "read back",
        c.probe_get(id).await.map_err(e)?,
        Some("written".into()),
    )?;
    tokio::time::sleep(AFTER_TTL).await;
    expect("after its TTL", c.probe_get(id).await.map_err(e)?, None)?;
    c.probe_set(id, "again", Duration::from_secs(60))
        .await
        .map_err(e)?;
    expect("deleted", c.probe_delete(id).await.map_err(e)?, true)?;
    expect("after delete", c.probe_get(id).await.map_err(e)?, None)?;
    Ok("written, read, expired, deleted".into())
}

async fn mysql_probe(a: &Actors, id: &str) -> Result<String, String> {
    let st = &a.store;
    let key = format!("probe:check:{id}");
    let e = |e: crate::error::StoreError| e.to_string();
    let ttl = chrono::Duration::milliseconds(i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX));
    let k = key.clone();
    st.exec(move |c| Box::pin(ephemeral::set_entry(c, k, "written".into(), ttl)))
        .await
        .map_err(e)?;
    let k = key.clone();
    let got = st
        .exec(move |c| Box::pin(ephemeral::get_entry(c, k)))
        .await
        .map_err(e)?;
    expect("read back", got, Some("written".into()))?;
    tokio::time::sleep(AFTER_TTL).await;
    let k = key.clone();
    let got = st
        .exec(move |c| Box::pin(ephemeral::get_entry(c, k)))
        .await
        .map_err(e)?;
    expect("after its expiry", got, None)?;
    let k = key.clone();
    let deleted = st
        .exec(move |c| Box::pin(ephemeral::delete_entry(c, k)))
        .await
        .map_err(e)?;
    expect("expired row deleted", deleted, true)?;
    Ok("written, read, expired, deleted".into())
}

/// Entries go to Redis in hybrid and redis mode, to MySQL in mysql mode.
async fn entry_routing(a: &Actors, config: &Config, id: &str) -> Result<String, String> {
    let r = &a.router;
    let e = |e: crate::error::AppError| e.to_string();
    r.set_entry(EntryKind::Probe, id, "routed".into(), TTL)
        .await
        .map_err(e)?;
    expect(
        "read through the router",
        r.get_entry(EntryKind::Probe, id).await.map_err(e)?,
        Some("routed".into()),
    )?;
    let name = EntryKind::Probe.name(id);
    let where_ = if config.mode == StorageMode::Mysql {
        let n = name.clone();
        let got = a
            .store
            .exec(move |c| Box::pin(ephemeral::get_entry(c, n)))
            .await
            .map_err(|e| e.to_string())?;
        expect("stored in MySQL", got, Some("routed".into()))?;
        "MySQL"
    } else {
        let got = a.cache.get_entry(&name).await.map_err(|e| e.to_string())?;
        expect("stored in Redis", got, Some("routed".into()))?;
        "Redis"
    };
    tokio::time::sleep(AFTER_TTL).await;
    expect(
        "after its TTL",
        r.get_entry(EntryKind::Probe, id).await.map_err(e)?,
        None,
    )?;
    r.delete_entry(EntryKind::Probe, id).await.map_err(e)?;
    Ok(format!("held by {where_}, expired, deleted"))
}

fn probe_key_id(id: &str) -> String {
    format!("probe-{}", &id[..24])
}

/// A probe key through the router: stored where the mode keeps keys, found by hash, cached
/// in Redis in hybrid mode, and gone everywhere after delete.
async fn key_routing(a: &Actors, config: &Config, id: &str) -> Result<String, String> {
    let r = &a.router;
    let e = |e: crate::error::AppError| e.to_string();
    let plain = generate_key(&config.api_key_prefix);
    let hash = hash_key(&plain, config.encryption_key.expose_secret());
    let mut key = ApiKey::new(probe_key_id(id), format!("check probe {id}"), hash.clone());
    key.description = "temporary probe of `claude-relay check`".into();
    r.create_key(key.clone()).await.map_err(e)?;
    let found = r.find_key_by_hash(&hash).await.map_err(e)?;
    expect("found by hash", found.map(|k| k.id), Some(key.id.clone()))?;
    let kid = key.id.clone();
    match config.mode {
        StorageMode::Redis => {
            let got = a.cache.get_key(&kid).await.map_err(|e| e.to_string())?;
            expect("record in Redis", got.map(|k| k.id), Some(kid.clone()))?;
        }
        _ => {
            let k = kid.clone();
            let got = a
                .store
                .exec(move |c| Box::pin(api_keys::get(c, k)))
                .await
                .map_err(|e| e.to_string())?;
            expect("row in MySQL", got.map(|k| k.id), Some(kid.clone()))?;
        }
    }
    if config.mode == StorageMode::Hybrid {
        // The lookup fills the Redis cache in the background.
        let mut cached = None;
        for _ in 0..20 {
            cached = a
                .cache
                .get_cached_key(&hash)
                .await
                .map_err(|e| e.to_string())?;
            if cached.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        expect("cached in Redis", cached.map(|k| k.id), Some(kid.clone()))?;
    }
    expect("deleted", r.delete_key(&kid).await.map_err(e)?, true)?;
    expect(
        "lookup after delete",
        r.find_key_by_hash(&hash).await.map_err(e)?.map(|k| k.id),
        None,
    )?;
    if config.mode == StorageMode::Hybrid {
        let mut cached = Some(());
        for _ in 0..20 {
            cached = a
                .cache
                .get_cached_key(&hash)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ());
            if cached.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        expect("cache entry after delete", cached, None)?;
    }
    Ok(format!(
        "created, found, held by {}, deleted",
        match config.mode {
            StorageMode::Redis => "Redis",
            StorageMode::Mysql => "MySQL",
            StorageMode::Hybrid => "MySQL + Redis cache",
        }
    ))
}

/// Removes every probe, whatever step failed.
async fn cleanup(a: &Actors, config: &Config, id: &str) {
    if let Err(e) = a.router.delete_entry(EntryKind::Probe, id).await {
        log::debug!("clean-up of the probe entry: {e}");
    }
    if let Err(e) = a.router.delete_key(&probe_key_id(id)).await {
        log::debug!("clean-up of the probe key: {e}");
    }
    if config.mode.uses_redis()
        && let Err(e) = a.cache.probe_delete(id).await
    {
        log::debug!("clean-up of the redis probe: {e}");
    }
    if config.mode.uses_mysql() {
        let key = format!("probe:check:{id}");
        if let Err(e) = a
            .store
            .exec(move |c| Box::pin(ephemeral::delete_entry(c, key)))
            .await
        {
            log::debug!("clean-up of the mysql probe: {e}");
        }
    }
}
