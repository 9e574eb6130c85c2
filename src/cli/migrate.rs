//! `claude-relay migrate to-hybrid | from-hybrid`: move a deployment's data into hybrid mode
//! (from our redis mode, from a CRS Redis data set, or re-initialise an existing MySQL), or
//! out of it into one backend.
//!
//! Resumable and idempotent by construction: every record is upserted by its id after a
//! comparison with what is stored, archive rows are inserted by request id, counter values
//! are written as absolute values, and the Redis side is rebuilt from MySQL at the end. A
//! second run writes nothing; a run interrupted after N records (`--stop-after N`, hidden,
//! for tests) completes when run again, without duplicates.

use std::collections::{BTreeMap, HashMap, HashSet};

use clap::{Args, Subcommand, ValueEnum};
use secrecy::ExposeSecret;

use super::import_crs;
use super::ops_support::{self, Progress, Report};
use super::rebuild_cache;
use crate::actors::cache_migrate::{CounterValue, CrsSource};
use crate::app::Actors;
use crate::config::{Config, StorageMode};
use crate::domain::crypto::CredentialCipher;
use crate::domain::limits::Counters;
use crate::domain::usage_event::UsageEvent;
use crate::persistence::ops::{self as queries, CounterRow};
use crate::persistence::{accounts, admin, api_keys, usage};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Detect the current data, initialise the hybrid schema, copy everything into place
    /// and build the caches (resumable, idempotent).
    ToHybrid(ToHybridArgs),
    /// Move everything from hybrid mode into one backend.
    FromHybrid(FromHybridArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Our redis mode if its records exist, else a CRS data set, else MySQL as it is.
    Auto,
    /// Our own redis-mode records (same Redis and key prefix).
    Redis,
    /// A CRS (Node.js Claude Relay Service) Redis database.
    Crs,
}

#[derive(Debug, Args)]
pub struct ToHybridArgs {
    #[arg(long, value_enum, default_value = "auto")]
    pub source: Source,
    /// Show what would be done; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Redis holding the CRS data set (default: REDIS_HOST/PORT/DB of this deployment).
    #[arg(long)]
    pub from_redis_url: Option<String>,
    /// ENCRYPTION_KEY of the CRS deployment (default: ours).
    #[arg(long, env = "CRS_ENCRYPTION_KEY", hide_env_values = true)]
    pub crs_encryption_key: Option<String>,
    /// Stop after writing N records (tests of resumption).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Redis,
    Mysql,
}

#[derive(Debug, Args)]
pub struct FromHybridArgs {
    #[arg(long, value_enum)]
    pub to: Target,
    /// Stop after writing N records (tests of resumption).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

pub async fn run(config: Config, args: MigrateArgs) -> Result<(), String> {
    match args.command {
        MigrateCommand::ToHybrid(a) => to_hybrid(config, a).await,
        MigrateCommand::FromHybrid(a) => from_hybrid(config, a).await,
    }
}

/// Counts shown before and after.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    keys: usize,
    accounts: usize,
    admins: i64,
    archive_rows: i64,
    imported_daily_rows: usize,
    counter_baselines: usize,
    redis_counters: usize,
}

async fn counts(actors: &Actors) -> Counts {
    let keys = actors
        .router
        .list_keys(true)
        .await
        .map(|k| k.len())
        .unwrap_or(0);
    let accounts = actors
        .router
        .list_accounts()
        .await
        .map(|a| a.len())
        .unwrap_or(0);
    let admins = actors
        .store
        .exec(|c| Box::pin(admin::count_admins(c)))
        .await
        .unwrap_or(0);
    let archive_rows = actors
        .store
        .exec(|c| Box::pin(usage::count_records(c)))
        .await
        .unwrap_or(0);
    let imported_daily_rows = actors
        .store
        .exec(|c| Box::pin(queries::daily_imports(c)))
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let counter_baselines = actors
        .store
        .exec(|c| {
            Box::pin(queries::counter_rows(
                c,
                queries::BASELINE_PREFIX.to_string(),
            ))
        })
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let redis_counters = actors
        .cache
        .counter_names()
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    Counts {
        keys,
        accounts,
        admins,
        archive_rows,
        imported_daily_rows,
        counter_baselines,
        redis_counters,
    }
}

fn print_counts(when: &str, c: &Counts) {
    println!(
        "{when}: {} keys, {} accounts, {} admins, {} archive rows, {} imported daily rows, {} counter baselines, {} Redis counter sets",
        c.keys,
        c.accounts,
        c.admins,
        c.archive_rows,
        c.imported_daily_rows,
        c.counter_baselines,
        c.redis_counters
    );
}

fn redis_url(config: &Config) -> String {
    config.redis.url().expose_secret().to_string()
}

/// What `--source auto` found.
enum Detected {
    RedisMode,
    Crs(String),
    MysqlOnly,
}

async fn detect(config: &Config, args: &ToHybridArgs) -> Result<Detected, String> {
    let crs_url = args
        .from_redis_url
        .clone()
        .unwrap_or_else(|| redis_url(config));
    match args.source {
        Source::Redis => return Ok(Detected::RedisMode),
        Source::Crs => return Ok(Detected::Crs(crs_url)),
        Source::Auto => {}
    }
    if args.from_redis_url.is_none() {
        let mut redis_config = config.clone();
        redis_config.mode = StorageMode::Redis;
        let probe =
            ops_support::start(&redis_config, Some(ops_support::private_journal("detect"))).await?;
        if probe
            .cache
            .has_redis_mode_records()
            .await
            .map_err(|e| format!("cannot read Redis: {e}"))?
        {
            return Ok(Detected::RedisMode);
        }
    }
    let mut source = CrsSource::connect(&crs_url).await?;
    if source.looks_like_crs().await? {
        return Ok(Detected::Crs(crs_url));
    }
    Ok(Detected::MysqlOnly)
}

async fn to_hybrid(mut config: Config, args: ToHybridArgs) -> Result<(), String> {
    config.mode = StorageMode::Hybrid;
    let detected = detect(&config, &args).await?;
    match &detected {
        Detected::RedisMode => println!(
            "source: redis-mode records (prefix `{}`)",
            config.redis.key_prefix
        ),
        Detected::Crs(_) => println!("source: CRS data set"),
        Detected::MysqlOnly => println!("source: no redis-mode or CRS data found; MySQL as it is"),
    }
    let mut report = Report {
        stop_after: args.stop_after,
        ..Report::default()
    };
    // The CRS snapshot is read and checked before MySQL is even touched for data.
    let crs_plan = if let Detected::Crs(url) = &detected {
        let ours = config.encryption_key.expose_secret().to_string();
        let crs_key = args
            .crs_encryption_key
            .clone()
            .unwrap_or_else(|| ours.clone());
        if crs_key != ours {
            eprintln!(
                "WARNING: the CRS ENCRYPTION_KEY differs from this deployment's ENCRYPTION_KEY.\n\
                 WARNING: imported API keys keep their CRS hashes (sha256(key + CRS ENCRYPTION_KEY));\n\
                 WARNING: they authenticate only when ENCRYPTION_KEY is set to the CRS value.\n\
                 WARNING: account secrets are re-encrypted with this deployment's key."
            );
        }
        let mut source = CrsSource::connect(url).await?;
        let data = source.snapshot().await?;
        println!("CRS data set: {} Redis keys read", data.len());
        let plan = import_crs::plan(
            &data,
            &crs_key,
            chrono::Utc::now(),
            config.timezone_offset_hours,
        )?;
        println!(
            "CRS plan: {} keys, {} accounts, {} admin, {} daily history rows, {} counter sets",
            plan.keys.len(),
            plan.accounts.len(),
            usize::from(plan.admin.is_some()),
            plan.daily.len(),
            plan.baselines.len()
        );
        Some(plan)
    } else {
        None
    };
    if args.dry_run {
        if let Some(plan) = &crs_plan {
            for (what, why) in &plan.skipped {
                println!("  would skip {what}: {why}");
            }
            for n in &plan.notes {
                println!("  note: {n}");
            }
        }
        println!("dry run: nothing written");
        return Ok(());
    }
    {
        let mysql = config.mysql.clone();
        let applied = tokio::task::spawn_blocking(move || {
            crate::persistence::setup::ensure_database_and_migrate(&mysql)
        })
        .await
        .map_err(|e| e.to_string())??;
        println!(
            "schema: database `{}` ready, {applied} migration(s) applied",
            config.mysql.database
        );
    }
    let actors = ops_support::start(&config, None).await?;
    let before = counts(&actors).await;
    print_counts("before", &before);
    let cipher = CredentialCipher::new(config.encryption_key.expose_secret())
        .map_err(|e| format!("ENCRYPTION_KEY: {e}"))?;
    match detected {
        Detected::Crs(_) => {
            if let Some(plan) = crs_plan {
                import_crs::apply(plan, &actors, &cipher, &mut report).await?;
            }
        }
        Detected::RedisMode => copy_from_redis_mode(&config, &actors, &mut report).await?,
        Detected::MysqlOnly => {}
    }
    println!("records: {}", report.summary());
    let r = rebuild_cache::rebuild(&actors, &config).await?;
    println!(
        "caches: {} counter sets rebuilt, {} stale deleted, {} keys and {} accounts cached",
        r.counters, r.stale_counters, r.keys_cached, r.accounts_cached
    );
    print_counts("after", &counts(&actors).await);
    println!("to-hybrid complete: set DATABASE_TYPE=hybrid and start the relay");
    Ok(())
}

/// Copies keys, accounts and operators through the routers, archive lists into MySQL, and
/// turns the live redis-mode counters into baselines (live − archive).
async fn copy_from_redis_mode(
    config: &Config,
    target: &Actors,
    report: &mut Report,
) -> Result<(), String> {
    let mut src_config = config.clone();
    src_config.mode = StorageMode::Redis;
    let source =
        ops_support::start(&src_config, Some(ops_support::private_journal("source"))).await?;
    copy_records(&source, target, report).await?;
    // Archive (capped lists in redis mode) → usage_records, idempotent by request id.
    let raw = source
        .cache
        .archived_events()
        .await
        .map_err(|e| format!("cannot read the redis-mode archive: {e}"))?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for s in raw {
        match serde_json::from_str::<UsageEvent>(&s) {
            Ok(e) if seen.insert(e.request_id.clone()) => events.push(e),
            Ok(_) => {}
            Err(e) => report.skip("an archived usage event", format!("unreadable: {e}")),
        }
    }
    let mut progress = Progress::new("archive", events.len() as u64);
    let offset = config.timezone_offset_hours;
    while !events.is_empty() {
        let n = events.len().min(report.budget()).min(500);
        let batch: Vec<UsageEvent> = events.drain(..n).collect();
        let inserted = target
            .store
            .exec_with_timeout(Some(std::time::Duration::from_secs(60)), move |c| {
                Box::pin(usage::insert_events(c, batch, offset))
            })
            .await
            .map_err(|e| format!("cannot write the archive: {e}"))?;
        progress.inc(n as u64);
        report.unchanged += (n - inserted) as u64;
        report.created += inserted as u64;
        report.count_writes(inserted.max(1))?;
    }
    progress.finish();
    // Baselines: what the live counters hold beyond what the archive explains.
    let names = source
        .cache
        .counter_names()
        .await
        .map_err(|e| format!("cannot scan counters: {e}"))?;
    let live = source
        .cache
        .read_counter_values(&names)
        .await
        .map_err(|e| format!("cannot read counters: {e}"))?;
    let sums = rebuild_cache::archive_sums(target, config).await?;
    let mut baselines = BTreeMap::new();
    for v in live {
        let from_archive = sums.get(&v.name).map(|s| s.counters).unwrap_or_default();
        let a = v.counters.to_array();
        let b = from_archive.to_array();
        let rest = Counters::from_array(std::array::from_fn(|i| (a[i] - b[i]).max(0)));
        if rest != Counters::default() {
            baselines.insert(v.name, (rest, v.ttl_ms.map(|ms| ms / 1000 + 1)));
        }
    }
    import_crs::write_history(Vec::new(), baselines, target, report).await
}

/// Copies keys, accounts and operators from one router to another (upsert after compare).
async fn copy_records(source: &Actors, target: &Actors, report: &mut Report) -> Result<(), String> {
    let keys = source
        .router
        .list_keys(true)
        .await
        .map_err(|e| format!("cannot list source keys: {e}"))?;
    let mut progress = Progress::new("keys", keys.len() as u64);
    for mut k in keys {
        progress.inc(1);
        micros_key(&mut k);
        match target
            .router
            .get_key(&k.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(old) if old == k => report.unchanged += 1,
            Some(old) => {
                target
                    .router
                    .save_key(k.clone(), Some(old.key_hash))
                    .await
                    .map_err(|e| format!("updating key {}: {e}", k.id))?;
                println!("  updated api key {}", k.id);
                report.wrote(false)?;
            }
            None => match target.router.create_key(k.clone()).await {
                Ok(_) => report.wrote(true)?,
                Err(e) => report.skip(format!("api key {}", k.id), e.to_string()),
            },
        }
    }
    progress.finish();
    // Groups before the accounts that name them.
    let groups = source
        .router
        .list_groups()
        .await
        .map_err(|e| format!("cannot list source account groups: {e}"))?;
    for mut g in groups {
        micros(&mut g.created_at);
        micros(&mut g.updated_at);
        match target
            .router
            .get_group(&g.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(old) if old == g => report.unchanged += 1,
            old => {
                target
                    .router
                    .save_group(g.clone())
                    .await
                    .map_err(|e| format!("copying account group {}: {e}", g.id))?;
                if old.is_some() {
                    println!("  updated account group {}", g.id);
                }
                report.wrote(old.is_none())?;
            }
        }
    }
    let accounts = source
        .router
        .list_accounts()
        .await
        .map_err(|e| format!("cannot list source accounts: {e}"))?;
    for mut a in accounts {
        micros_account(&mut a);
        match target
            .router
            .get_account(&a.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(old) if old == a => report.unchanged += 1,
            Some(_) => {
                target
                    .router
                    .save_account(a.clone())
                    .await
                    .map_err(|e| format!("updating account {}: {e}", a.id))?;
                println!("  updated account {}", a.id);
                report.wrote(false)?;
            }
            None => {
                target
                    .router
                    .create_account(a.clone())
                    .await
                    .map_err(|e| format!("creating account {}: {e}", a.id))?;
                report.wrote(true)?;
            }
        }
    }
    for (user, hash) in source_admins(source).await? {
        if target
            .router
            .ensure_admin(user.clone(), hash)
            .await
            .map_err(|e| format!("copying admin {user}: {e}"))?
        {
            report.wrote(true)?;
        } else {
            report.unchanged += 1;
        }
    }
    Ok(())
}

/// Times as MySQL keeps them (DATETIME(6)): Redis records carry nanoseconds, which would
/// make every record look changed on each run.
fn micros(t: &mut chrono::DateTime<chrono::Utc>) {
    use chrono::SubsecRound;
    *t = t.trunc_subsecs(6);
}

fn micros_opt(t: &mut Option<chrono::DateTime<chrono::Utc>>) {
    if let Some(t) = t {
        micros(t);
    }
}

fn micros_key(k: &mut crate::domain::api_key::ApiKey) {
    micros(&mut k.created_at);
    micros(&mut k.updated_at);
    for t in [
        &mut k.activated_at,
        &mut k.expires_at,
        &mut k.last_used_at,
        &mut k.deleted_at,
    ] {
        micros_opt(t);
    }
}

fn micros_account(a: &mut crate::domain::account::Account) {
    micros(&mut a.created_at);
    micros(&mut a.updated_at);
    if let Some(w) = &mut a.session_window {
        micros(&mut w.start);
        micros(&mut w.end);
    }
    if let Some(t) = a
        .subscription
        .as_mut()
        .and_then(|s| s.profile_fetched_at.as_mut())
    {
        micros(t);
    }
    for t in [
        &mut a.token_expires_at,
        &mut a.status_until,
        &mut a.last_used_at,
        &mut a.last_refresh_at,
    ] {
        micros_opt(t);
    }
}

/// Operators of a deployment: from Redis in redis mode, from MySQL otherwise.
async fn source_admins(source: &Actors) -> Result<Vec<(String, String)>, String> {
    let health = source
        .router
        .health(std::time::Duration::from_secs(1))
        .await;
    let redis_mode = health.is_some_and(|h| h.mode == StorageMode::Redis);
    if redis_mode {
        let mut out = Vec::new();
        for user in source
            .cache
            .admin_usernames()
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some(h) = source
                .cache
                .admin_password_hash(&user)
                .await
                .map_err(|e| e.to_string())?
            {
                out.push((user, h));
            }
        }
        return Ok(out);
    }
    source
        .store
        .exec(|c| Box::pin(queries::admin_credentials(c)))
        .await
        .map_err(|e| format!("cannot list admins: {e}"))
}

async fn from_hybrid(mut config: Config, args: FromHybridArgs) -> Result<(), String> {
    config.mode = StorageMode::Hybrid;
    let hybrid = ops_support::start(&config, None).await?;
    print_counts("before (hybrid)", &counts(&hybrid).await);
    let mut report = Report {
        stop_after: args.stop_after,
        ..Report::default()
    };
    // Redis counters complete and consistent with MySQL first (outbox drained).
    let r = rebuild_cache::rebuild(&hybrid, &config).await?;
    println!("counters: {} sets rebuilt from MySQL", r.counters);
    match args.to {
        Target::Redis => {
            let mut target_config = config.clone();
            target_config.mode = StorageMode::Redis;
            let target =
                ops_support::start(&target_config, Some(ops_support::private_journal("target")))
                    .await?;
            copy_records(&hybrid, &target, &mut report).await?;
            println!("records: {}", report.summary());
            println!(
                "counters: already in Redis (redis mode uses the same counter sets); the usage \
                 archive stays in MySQL (redis mode keeps only new requests)"
            );
            let keys = target
                .router
                .list_keys(true)
                .await
                .map(|k| k.len())
                .unwrap_or(0);
            let accounts = target
                .router
                .list_accounts()
                .await
                .map(|a| a.len())
                .unwrap_or(0);
            println!("after (redis mode): {keys} keys, {accounts} accounts");
            println!("from-hybrid complete: set DATABASE_TYPE=redis and start the relay");
        }
        Target::Mysql => {
            // Keys, accounts, operators and the archive are already in MySQL; counters move
            // from Redis into usage_counters (absolute values).
            let names = hybrid
                .cache
                .counter_names()
                .await
                .map_err(|e| format!("cannot scan counters: {e}"))?;
            let live = hybrid
                .cache
                .read_counter_values(&names)
                .await
                .map_err(|e| format!("cannot read counters: {e}"))?;
            let stored = hybrid
                .store
                .exec(|c| Box::pin(queries::counter_rows(c, String::new())))
                .await
                .map_err(|e| format!("cannot read usage_counters: {e}"))?;
            let stored: HashMap<String, Counters> =
                stored.into_iter().map(|r| (r.name, r.counters)).collect();
            let now = chrono::Utc::now();
            let mut rows: Vec<CounterRow> = Vec::new();
            for CounterValue {
                name,
                counters,
                ttl_ms,
            } in live
            {
                if stored.get(&name) == Some(&counters) {
                    report.unchanged += 1;
                    continue;
                }
                rows.push(CounterRow {
                    name,
                    counters,
                    expires_at: ttl_ms
                        .map(|ms| (now + chrono::Duration::milliseconds(ms)).naive_utc()),
                });
            }
            let mut progress = Progress::new("counters", rows.len() as u64);
            while !rows.is_empty() {
                let n = rows.len().min(report.budget()).min(200);
                let batch: Vec<CounterRow> = rows.drain(..n).collect();
                hybrid
                    .store
                    .exec(move |c| Box::pin(queries::put_counter_rows(c, batch)))
                    .await
                    .map_err(|e| format!("cannot write usage_counters: {e}"))?;
                progress.inc(n as u64);
                report.created += n as u64;
                report.count_writes(n)?;
            }
            progress.finish();
            let keys = hybrid
                .store
                .exec(|c| Box::pin(api_keys::count(c)))
                .await
                .unwrap_or(0);
            let accounts = hybrid
                .store
                .exec(|c| Box::pin(accounts::count(c)))
                .await
                .unwrap_or(0);
            println!("records: {}", report.summary());
            println!("after (mysql mode): {keys} keys, {accounts} accounts in MySQL");
            println!("from-hybrid complete: set DATABASE_TYPE=mysql and start the relay");
        }
    }
    Ok(())
}
