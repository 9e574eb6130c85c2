//! `migrate to-hybrid --source crs`: imports a CRS (Node.js Claude Relay Service) Redis data
//! set. Everything is read and converted first, and one account secret is decrypted before
//! anything is written, so a wrong CRS `ENCRYPTION_KEY` stops the run with nothing written.
//!
//! Keys keep their hashes; account secrets are decrypted (AES-256-CBC + scrypt) and sealed
//! again with ours; the admin keeps its bcrypt hash; usage history becomes `usage_daily`
//! rows with `source = 'import'` (per key, model and day) and counter baselines (lifetime,
//! month, day, hour per key, key × model, model and account; daily cost; weekly Opus cost)
//! from which `rebuild-cache` derives the Redis counters. Every write is an upsert keyed by
//! the CRS id and compared with what is stored first, so a second run changes nothing and an
//! interrupted run finishes when run again.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};

use super::ops_support::Report;
use crate::app::Actors;
use crate::domain::account::Credentials;
pub use crate::domain::crs::{CrsPlan, PlannedAccount, plan};
use crate::domain::crypto::CredentialCipher;
use crate::domain::limits::Counters;
use crate::persistence::ops::{BASELINE_PREFIX, CounterRow, DailyImport};

/// Writes the plan through the router (keys, accounts, admin) and the persistence actor
/// (history and baselines), comparing with what is stored first.
pub async fn apply(
    plan: CrsPlan,
    actors: &Actors,
    cipher: &CredentialCipher,
    report: &mut Report,
) -> Result<(), String> {
    for (what, why) in &plan.skipped {
        report.skip(what.clone(), why.clone());
    }
    for n in &plan.notes {
        println!("  note: {n}");
    }
    let router = &actors.router;
    for k in plan.keys {
        let existing = router
            .get_key(&k.id)
            .await
            .map_err(|e| format!("reading key {}: {e}", k.id))?;
        match existing {
            Some(old) if old == k => report.unchanged += 1,
            Some(old) => {
                router
                    .save_key(k.clone(), Some(old.key_hash))
                    .await
                    .map_err(|e| format!("updating key {}: {e}", k.id))?;
                report.wrote(false)?;
            }
            None => match router.create_key(k.clone()).await {
                Ok(_) => report.wrote(true)?,
                Err(e) => report.skip(format!("api key {}", k.id), e.to_string()),
            },
        }
    }
    for g in plan.groups {
        let existing = router
            .get_group(&g.id)
            .await
            .map_err(|e| format!("reading account group {}: {e}", g.id))?;
        match existing {
            Some(old) if old == g => report.unchanged += 1,
            old => {
                router
                    .save_group(g.clone())
                    .await
                    .map_err(|e| format!("writing account group {}: {e}", g.id))?;
                report.wrote(old.is_none())?;
            }
        }
    }
    for p in plan.accounts {
        let PlannedAccount {
            mut account,
            credentials,
            proxy,
        } = p;
        let existing = router
            .get_account(&account.id)
            .await
            .map_err(|e| format!("reading account {}: {e}", account.id))?;
        // Reuse the stored ciphertexts when the secrets are unchanged (sealing again would
        // use a fresh nonce and count as a change).
        let old_creds = existing.as_ref().and_then(|a| {
            cipher
                .open(&a.credentials_encrypted)
                .ok()
                .and_then(|s| serde_json::from_str::<Credentials>(&s).ok())
        });
        account.credentials_encrypted = match (&existing, old_creds) {
            (Some(a), Some(c)) if c == credentials => a.credentials_encrypted.clone(),
            _ => cipher
                .seal(&serde_json::to_string(&credentials).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
        };
        let old_proxy = existing
            .as_ref()
            .and_then(|a| a.proxy_encrypted.as_ref())
            .and_then(|p| cipher.open(p).ok());
        account.proxy_encrypted = match (&proxy, &existing) {
            (None, _) => None,
            (Some(p), Some(a)) if old_proxy.as_ref() == Some(p) => a.proxy_encrypted.clone(),
            (Some(p), _) => Some(cipher.seal(p).map_err(|e| e.to_string())?),
        };
        match existing {
            Some(old) if old == account => report.unchanged += 1,
            Some(_) => {
                router
                    .save_account(account.clone())
                    .await
                    .map_err(|e| format!("updating account {}: {e}", account.id))?;
                report.wrote(false)?;
            }
            None => {
                router
                    .create_account(account.clone())
                    .await
                    .map_err(|e| format!("creating account {}: {e}", account.id))?;
                report.wrote(true)?;
            }
        }
    }
    if let Some((user, hash)) = plan.admin {
        let stored = actors
            .store
            .exec(|c| Box::pin(crate::persistence::ops::admin_credentials(c)))
            .await
            .map_err(|e| format!("reading admins: {e}"))?;
        match stored.iter().find(|(u, _)| *u == user) {
            Some((_, h)) if *h == hash => report.unchanged += 1,
            Some(_) => report.skip(
                format!("admin {user}"),
                "an admin with this name exists already with another password; left as it is",
            ),
            None => {
                router
                    .ensure_admin(user.clone(), hash)
                    .await
                    .map_err(|e| format!("creating admin {user}: {e}"))?;
                report.wrote(true)?;
            }
        }
    }
    write_history(plan.daily, plan.baselines, actors, report).await
}

/// Writes the daily history rows and counter baselines that differ from what is stored.
pub async fn write_history(
    daily: Vec<DailyImport>,
    baselines: BTreeMap<String, (Counters, Option<i64>)>,
    actors: &Actors,
    report: &mut Report,
) -> Result<(), String> {
    use crate::persistence::ops as queries;
    let store = &actors.store;
    let stored = store
        .exec(|c| Box::pin(queries::daily_imports(c)))
        .await
        .map_err(|e| format!("reading imported history: {e}"))?;
    let stored: HashMap<(NaiveDate, String, String, String), Counters> = stored
        .into_iter()
        .map(|r| ((r.date, r.api_key_id, r.account_id, r.model), r.counters))
        .collect();
    let mut todo: Vec<DailyImport> = Vec::new();
    for r in daily {
        let k = (
            r.date,
            r.api_key_id.clone(),
            r.account_id.clone(),
            r.model.clone(),
        );
        match stored.get(&k) {
            Some(c) if *c == r.counters => report.unchanged += 1,
            Some(_) => {
                report.updated += 1;
                todo.push(r)
            }
            None => {
                report.created += 1;
                todo.push(r)
            }
        }
    }
    while !todo.is_empty() {
        let n = todo.len().min(report.budget()).min(200);
        let batch: Vec<DailyImport> = todo.drain(..n).collect();
        store
            .exec(move |c| Box::pin(queries::put_daily_imports(c, batch)))
            .await
            .map_err(|e| format!("writing imported history: {e}"))?;
        report.count_writes(n)?;
    }
    let stored = store
        .exec(|c| Box::pin(queries::counter_rows(c, BASELINE_PREFIX.to_string())))
        .await
        .map_err(|e| format!("reading counter baselines: {e}"))?;
    let stored: HashMap<String, Counters> =
        stored.into_iter().map(|r| (r.name, r.counters)).collect();
    let now = Utc::now();
    let mut rows: Vec<CounterRow> = Vec::new();
    for (name, (c, ttl)) in baselines {
        let name = format!("{BASELINE_PREFIX}{name}");
        match stored.get(&name) {
            Some(old) if *old == c => report.unchanged += 1,
            old => {
                if old.is_some() {
                    report.updated += 1;
                } else {
                    report.created += 1;
                }
                rows.push(CounterRow {
                    name,
                    counters: c,
                    expires_at: ttl.map(|t| (now + chrono::Duration::seconds(t)).naive_utc()),
                });
            }
        }
    }
    while !rows.is_empty() {
        let n = rows.len().min(report.budget()).min(200);
        let batch: Vec<CounterRow> = rows.drain(..n).collect();
        store
            .exec(move |c| Box::pin(queries::put_counter_rows(c, batch)))
            .await
            .map_err(|e| format!("writing counter baselines: {e}"))?;
        report.count_writes(n)?;
    }
    Ok(())
}
