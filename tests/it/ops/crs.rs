//! Import of the CRS fixture data set A (`tests/fixtures/crs-redis`, README there): keys
//! authenticate with their CRS hashes, secrets decrypt to the README's plaintexts, usage
//! equals the README's tables; runs are idempotent and resumable; a wrong key writes nothing.

use chrono::Utc;
use claude_relay::domain::account::Credentials;
use claude_relay::domain::crypto::CredentialCipher;
use claude_relay::domain::keys::hash_key;
use claude_relay::domain::limits::Counters;
use claude_relay::domain::password;

use super::{actors, cli, cli_ok, counter_snapshot, crs_redis, crs_redis_with_subs, wipe_redis};
use crate::support::TestEnv;
use crate::support::mysql::{database_exists, scalar, strings};

const CRS_KEY: &str = "6b7a89ad42e87e5260ad52ef9f4ea936";

/// (id, plaintext key, accepted by the relay).
const KEYS: [(&str, &str, bool); 14] = [
    (
        "0f73964f-97b5-40e9-a692-1f3556a2e19a",
        "cr_26082269ce2ffafbef6da656a13c821e0d6ad9dc8c9d8d827ceb887c31d174ab",
        true,
    ),
    (
        "a2e010b7-2208-4fe7-b4e3-c247442184c8",
        "cr_5b940573bd5a9169646687dee03899d3f94b8ead4822e606cfb2a11e4d69fc95",
        true,
    ),
    (
        "ae27ec5c-6308-4b42-becc-9befe94a1734",
        "cr_feaa6e6a2d6155e3de9e1b31a0fbc319a4d6ae3680b77bf1d5fe364af2446800",
        true,
    ),
    (
        "2dab2818-e374-4e18-a557-3a8c631efc12",
        "cr_292719ed1ce6a29c7de789930cba9d5a221b0b4660ae5a37f607b31d66dc7489",
        true,
    ),
    (
        "50841644-65a0-4c60-88a7-439d45d3c83c",
        "cr_e9ce81dc64c64ad28ec36b317f226e39debea6fc6ecbb6e0f87c1390bbfe4ab3",
        true,
    ),
    (
        "02e8f5c9-f0bd-478e-a387-bc3a2e61570b",
        "cr_b3839077659fde7f9185cdc5dbdd3c9ff981d4174e04e52dce52f8c724517e3c",
        true,
    ),
    (
        "6c5a8b45-c23c-4d31-b8ca-7a70800daca6",
        "cr_84bd2e9b280a05b6e7f15451a276f9180b405d23d29a22dfa25b030e2c61d51b",
        true,
    ),
    (
        "4fc03184-7867-4ff5-b037-9afc29f9b576",
        "cr_9990dbe403cd55152c082428052557cc1d0d1d34492021c4df060becc53e3bd8",
        true,
    ),
    // Not yet activated: accepted, its 30 days start at first use.
    (
        "ad4b8a76-2669-4086-9dad-6bed7841beb0",
        "cr_cd191805c1839e3756f71ff9543048804896f6b12cec613187d5449f428cd8ef",
        true,
    ),
    (
        "1a3e11df-bc45-4758-a242-98fd15c6f96e",
        "cr_4252e5f97d3c7257c569381a840e799aefdc376c58a1478eff5447fda90f6e02",
        false,
    ),
    (
        "026d18be-4f32-4d8e-9a48-ac49ceec7922",
        "cr_4481d3c513ba3da8ee6af8cdfabed38f122e057711def3a2117d2f802e9a587c",
        false,
    ),
    (
        "8918d486-b165-4267-b303-df845e6a955e",
        "cr_4adee835a6e336087ae5929da2ad714f97119a40383df17695fd0912501bf0cd",
        false,
    ),
    (
        "e7f1cc73-1b4d-49c7-aaa0-823370e57273",
        "cr_666eb0b4ab86d2d693698898fc2bfef66bedd83d27e8ad90d1b7f32cb15bf640",
        true,
    ),
    (
        "09988f0e-b722-4e82-82f0-414aa89566d0",
        "cr_81d9a28815a06d435160a7f8bd8327722ab5a0e139822b192055b7ad9698de27",
        true,
    ),
];

/// (account id, access token, refresh token, console api key).
type AccountSecrets = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);
const ACCOUNTS: [AccountSecrets; 4] = [
    (
        "18f71ec8-3f65-4595-a85e-6118e946f02a",
        Some("sk-ant-oat01-FIXTURE-20f8616393077e89e97601adca898e317dac80bd"),
        Some("sk-ant-ort01-FIXTURE-0b1827706703fdd9023f2d22cd2ba5c6438945f2"),
        None,
    ),
    (
        "c13d1300-502a-420d-9cc9-f52ce9d4e4b9",
        Some("sk-ant-oat01-FIXTURE-797154399fed78f2c54f4320032e1d619cc1854e"),
        Some("sk-ant-ort01-FIXTURE-7cf5311ec2868ead79c2c16eddb8032a0fe18077"),
        None,
    ),
    (
        "cf4b5613-2155-415f-b30b-5fbc6d78b181",
        None,
        None,
        Some("sk-fixture-console-85977d8c93e4cb6875d5a416fbcc14f4"),
    ),
    (
        "5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85",
        None,
        None,
        Some("sk-fixture-console-14e5928149700254cf498d29466fa587"),
    ),
];

const UNLIMITED: &str = "0f73964f-97b5-40e9-a692-1f3556a2e19a";
const DAILY: &str = "2dab2818-e374-4e18-a557-3a8c631efc12";
const WEEKLY: &str = "02e8f5c9-f0bd-478e-a387-bc3a2e61570b";
const DELETED: &str = "8918d486-b165-4267-b303-df845e6a955e";
const CONSOLE: &str = "09988f0e-b722-4e82-82f0-414aa89566d0";
const HAIKU: &str = "claude-3-5-haiku-20241022";
const OPUS: &str = "claude-opus-4-1-20250805";
const SONNET: &str = "claude-sonnet-4-20250514";

/// README "per key and model": requests, input, output, cache create, cache read, rated µ$.
const PER_MODEL: [(&str, &str, [i64; 6]); 11] = [
    (UNLIMITED, HAIKU, [14, 252, 126, 700, 0, 1400]),
    (UNLIMITED, OPUS, [4, 160, 120, 0, 480, 12120]),
    (UNLIMITED, SONNET, [24, 600, 288, 2400, 4800, 16560]),
    (DAILY, HAIKU, [14, 252, 126, 700, 0, 1400]),
    (DAILY, SONNET, [14, 350, 168, 1400, 2800, 9660]),
    (WEEKLY, OPUS, [18, 720, 540, 0, 2160, 54540]),
    (WEEKLY, SONNET, [8, 200, 96, 800, 1600, 5520]),
    (DELETED, SONNET, [5, 125, 60, 500, 1000, 3450]),
    (CONSOLE, HAIKU, [6, 108, 54, 300, 0, 600]),
    (CONSOLE, OPUS, [6, 240, 180, 0, 720, 18180]),
    (CONSOLE, SONNET, [18, 450, 216, 1800, 3600, 12420]),
];

/// README "per key": lifetime counters and `usage:cost:total` in µ$ (rounded).
const PER_KEY: [(&str, [i64; 6]); 5] = [
    (UNLIMITED, [42, 1012, 534, 3100, 5280, 30086]),
    (DAILY, [28, 602, 294, 2100, 2800, 11066]),
    (WEEKLY, [26, 920, 636, 800, 3760, 60060]),
    (DELETED, [5, 125, 60, 500, 1000, 3450]),
    (CONSOLE, [30, 798, 450, 2100, 4320, 31202]),
];

fn crs_env() -> TestEnv {
    TestEnv::new().with("ENCRYPTION_KEY", CRS_KEY)
}

fn import_args(url: &str, key: &str) -> Vec<String> {
    [
        "migrate",
        "to-hybrid",
        "--source",
        "crs",
        "--from-redis-url",
        url,
        "--crs-encryption-key",
        key,
    ]
    .map(String::from)
    .to_vec()
}

fn run_import(env: &TestEnv, url: &str, extra: &[&str]) -> (bool, String) {
    let mut args = import_args(url, CRS_KEY);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(env, &args)
}

/// Everything the import writes in MySQL, as text (to compare runs).
fn mysql_snapshot(env: &TestEnv) -> Vec<String> {
    let db = env.direct_mysql();
    let mut out = Vec::new();
    for sql in [
        "SELECT CONCAT_WS('|', id, name, key_hash, is_active, permissions, expires_at, deleted_at, updated_at, claude_account_id) AS s FROM api_keys ORDER BY id",
        "SELECT CONCAT_WS('|', id, name, account_type, base_url, credentials_encrypted, proxy_encrypted, scope, priority, schedulable, status, updated_at) AS s FROM claude_accounts ORDER BY id",
        "SELECT CONCAT_WS('|', username, password_hash, updated_at) AS s FROM admin_users ORDER BY username",
        "SELECT CONCAT_WS('|', usage_date, api_key_id, model, source, requests, input_tokens, output_tokens, cache_create_tokens, cache_read_tokens, cost_micros) AS s FROM usage_daily ORDER BY 1",
        "SELECT CONCAT_WS('|', counter_key, requests, input_tokens, output_tokens, cache_create_tokens, cache_read_tokens, cost_micros, expires_at) AS s FROM usage_counters ORDER BY counter_key",
    ] {
        out.extend(strings(&db, sql));
    }
    out
}

/// Checks every fact of the README against the imported deployment.
async fn verify_import(env: &TestEnv) {
    let config = env.config();
    let a = actors(&config).await;
    let now = Utc::now();
    for (id, plain, accepted) in KEYS {
        let key = a
            .router
            .find_key_by_hash(&hash_key(plain, CRS_KEY))
            .await
            .expect("lookup")
            .unwrap_or_else(|| panic!("key {id} not found by its CRS hash"));
        assert_eq!(key.id, id);
        assert_eq!(
            key.check_usable(now, None).is_ok(),
            accepted,
            "key {id}: {:?}",
            key.check_usable(now, None)
        );
    }
    let cipher = CredentialCipher::new(CRS_KEY).expect("cipher");
    for (id, access, refresh, api_key) in ACCOUNTS {
        let account = a
            .router
            .get_account(id)
            .await
            .expect("get")
            .expect("account");
        let creds: Credentials = serde_json::from_str(
            &cipher
                .open(&account.credentials_encrypted)
                .expect("opens with our key"),
        )
        .expect("credentials json");
        assert_eq!(creds.access_token.as_deref(), access, "{id}");
        assert_eq!(creds.refresh_token.as_deref(), refresh, "{id}");
        assert_eq!(creds.api_key.as_deref(), api_key, "{id}");
    }
    let primary = a
        .router
        .get_account("18f71ec8-3f65-4595-a85e-6118e946f02a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(primary.priority, 10);
    assert!(!primary.schedulable);
    assert_eq!(
        cipher
            .open(primary.proxy_encrypted.as_deref().expect("proxy"))
            .unwrap(),
        "socks5://127.0.0.1:1080"
    );
    let console = a
        .router
        .get_account("5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(console.base_url.as_deref(), Some("http://127.0.0.1:18080"));
    // Usage per key and model: the real-time counters and the imported daily history.
    let names: Vec<String> = PER_MODEL
        .iter()
        .map(|(k, m, _)| format!("usage:key:{k}:model:{m}:total"))
        .collect();
    let values = a.router.read_counters(names).await.expect("counters");
    let db = env.direct_mysql();
    for ((k, m, want), got) in PER_MODEL.iter().zip(values) {
        assert_eq!(got, Counters::from_array(*want), "{k} {m}");
        let sql = |col: &str| {
            format!(
                "SELECT CAST(SUM({col}) AS SIGNED) AS n FROM usage_daily WHERE source = 'import' \
                 AND api_key_id = '{k}' AND model = '{m}'"
            )
        };
        assert_eq!(scalar(&db, &sql("requests")), want[0], "daily {k} {m}");
        assert_eq!(scalar(&db, &sql("input_tokens")), want[1], "daily {k} {m}");
        assert_eq!(scalar(&db, &sql("cost_micros")), want[5], "daily {k} {m}");
    }
    let names: Vec<String> = PER_KEY
        .iter()
        .map(|(k, _)| format!("usage:key:{k}:total"))
        .collect();
    let values = a.router.read_counters(names).await.expect("counters");
    for ((k, want), got) in PER_KEY.iter().zip(values) {
        assert_eq!(got, Counters::from_array(*want), "total of {k}");
    }
    // The admin keeps its bcrypt hash, and the CRS password verifies against it.
    let hash = strings(
        &db,
        "SELECT password_hash AS s FROM admin_users WHERE username = 'fixture_admin_a'",
    );
    assert_eq!(hash.len(), 1);
    assert!(hash[0].starts_with("$2a$"));
    assert!(password::verify("IaCydcUuMYWtSHnF2N", &hash[0]));
}

#[actix_rt::test]
async fn crs_import_authenticates_keys_decrypts_secrets_and_keeps_usage() {
    let server = crs_redis();
    let env = crs_env();
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("source: CRS data set"), "{out}");
    assert!(!out.contains("WARNING"), "same key, no warning: {out}");
    assert!(
        out.contains("skipped 5 usage:records:* lists"),
        "skipped items are listed with their reason: {out}"
    );
    assert!(
        out.contains("after: 14 keys, 4 accounts, 1 admins"),
        "{out}"
    );
    verify_import(&env).await;

    // A second run changes nothing, in MySQL or in Redis.
    let mysql_before = mysql_snapshot(&env);
    let redis_before = counter_snapshot(&env.key_prefix);
    assert!(!redis_before.is_empty());
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("records: 0 created, 0 updated"), "{out}");
    assert_eq!(mysql_snapshot(&env), mysql_before);
    assert_eq!(counter_snapshot(&env.key_prefix), redis_before);

    // Redis wiped, then rebuild-cache: the counters are what they were.
    wipe_redis(&env.key_prefix);
    let out = cli_ok(&env, &["rebuild-cache"]);
    assert!(out.contains("after: 89 counter sets"), "{out}");
    assert_eq!(counter_snapshot(&env.key_prefix), redis_before);
    verify_import(&env).await;
}

#[actix_rt::test]
async fn crs_import_interrupted_then_rerun_completes_without_duplicates() {
    let server = crs_redis();
    let env = crs_env();
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let db = env.direct_mysql();
    let (ok, out) = run_import(&env, &url, &["--stop-after", "3"]);
    assert!(!ok, "--stop-after interrupts the run: {out}");
    assert!(out.contains("interrupted after 3 records"), "{out}");
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM api_keys"), 3);
    // Interrupted again in the middle of the history rows.
    let (ok, out) = run_import(&env, &url, &["--stop-after", "20"]);
    assert!(!ok, "{out}");
    assert!(out.contains("before: 3 keys"), "{out}");
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM api_keys"), 14);
    let daily = scalar(&db, "SELECT COUNT(*) AS n FROM usage_daily");
    assert!(daily > 0 && daily < 11, "part of the history: {daily}");
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "after: 14 keys, 4 accounts, 1 admins, 0 archive rows, 11 imported daily rows, 89 counter baselines, 89 Redis counter sets"
        ),
        "{out}"
    );
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM claude_accounts"), 4);
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM admin_users"), 1);
    verify_import(&env).await;
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok && out.contains("records: 0 created, 0 updated"), "{out}");
}

#[actix_rt::test]
async fn crs_import_with_a_wrong_key_writes_nothing_and_a_different_key_is_warned_about() {
    let server = crs_redis();
    // Our own ENCRYPTION_KEY is random: not the CRS one.
    let env = TestEnv::new();
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let wrong = "0123456789abcdef0123456789abcdef";
    let args = import_args(&url, wrong);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cli(&env, &args);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the CRS ENCRYPTION_KEY given does not decrypt claude")
            && out.contains("Nothing was written"),
        "a clear error: {out}"
    );
    assert!(
        !database_exists(&env.direct_mysql()),
        "not even the database was created"
    );
    assert!(super::redis_keys(&env.key_prefix).is_empty());

    // The right CRS key while ours differs: imported, with a loud warning, and the account
    // secrets re-sealed with our key.
    let args = import_args(&url, CRS_KEY);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli_ok(&env, &args);
    assert!(
        out.contains("WARNING: the CRS ENCRYPTION_KEY differs"),
        "{out}"
    );
    let a = actors(&env.config()).await;
    let ours = CredentialCipher::new(env.var("ENCRYPTION_KEY").unwrap()).unwrap();
    let account = a
        .router
        .get_account("cf4b5613-2155-415f-b30b-5fbc6d78b181")
        .await
        .unwrap()
        .unwrap();
    let creds: Credentials =
        serde_json::from_str(&ours.open(&account.credentials_encrypted).unwrap()).unwrap();
    assert_eq!(
        creds.api_key.as_deref(),
        Some("sk-fixture-console-85977d8c93e4cb6875d5a416fbcc14f4")
    );
}

#[actix_rt::test]
async fn crs_keys_relay_through_the_messages_endpoint_against_a_mock_upstream() {
    let server = crs_redis();
    let mock = crate::support::mock_upstream::start_mock().await;
    let env = crs_env().with("CLAUDE_API_URL", mock.url.clone()).with(
        "CLAUDE_OAUTH_TOKEN_URL",
        format!("{}/oauth/token", mock.url),
    );
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok, "{out}");
    let app = crate::support::spawn_app(env.config()).await;
    app.wait_for_health("healthy", std::time::Duration::from_secs(20))
        .await;
    // The console accounts of the data set point at a port of the CRS test machine: send
    // them to the mock instead.
    for id in [
        "cf4b5613-2155-415f-b30b-5fbc6d78b181",
        "5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85",
    ] {
        let mut a = app.actors.router.get_account(id).await.unwrap().unwrap();
        a.base_url = Some(mock.url.clone());
        app.actors.router.save_account(a).await.unwrap();
    }
    let body = serde_json::json!({
        "model": SONNET,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    });
    for (id, plain, accepted) in KEYS {
        let resp = app
            .client
            .post(app.url("/api/v1/messages"))
            .header("x-api-key", plain)
            .json(&body)
            .send()
            .await
            .expect("the relay answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if accepted {
            assert_eq!(status, 200, "key {id}: {text}");
        } else {
            assert!(
                matches!(status, 401 | 403),
                "key {id} must be refused: {status} {text}"
            );
        }
    }
    let accepted = KEYS.iter().filter(|k| k.2).count();
    assert_eq!(
        mock.message_count(),
        accepted,
        "one upstream call per accepted key"
    );
}

/// The Claude-Code-only key of `crs-extra/dataset-subs.json` and its plaintext.
const CC_ONLY: (&str, &str) = (
    "b1c0de00-0000-4000-8000-000000000001",
    "cr_c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de",
);

/// The group-bound key of `crs-extra/dataset-subs.json`, its plaintext, and its group.
const GROUP_BOUND: (&str, &str, &str) = (
    "b1c0de00-0000-4000-8000-000000000002",
    "cr_a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
    "b2a0c000-0000-4000-8000-00000000a001",
);

#[actix_rt::test]
async fn crs_client_restriction_and_group_bindings_are_imported_and_enforced() {
    use crate::relay::clients::{CLAUDE_CODE_HEADERS, SDK_HEADERS, claude_code_body, send};
    let server = crs_redis_with_subs();
    let mock = crate::support::mock_upstream::start_mock().await;
    let env = crs_env().with("CLAUDE_API_URL", mock.url.clone());
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let (ok, out) = run_import(&env, &url, &[]);
    assert!(ok, "{out}");
    let db = env.direct_mysql();
    assert_eq!(
        strings(
            &db,
            &format!(
                "SELECT CONCAT_WS('|', enable_client_restriction, allowed_clients) AS s \
                 FROM api_keys WHERE id = '{}'",
                CC_ONLY.0
            )
        ),
        [r#"1|["claude_code"]"#]
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) AS n FROM api_keys WHERE enable_client_restriction = 1"
        ),
        1,
        "only the restricted key carries the restriction"
    );
    // Subscription fields: the 5-hour window, the stop on warning and the profile; the
    // console daily quota of data set A; an encrypted CRS `email` as the profile's email.
    assert_eq!(
        strings(
            &db,
            "SELECT CONCAT_WS('|', id, IFNULL(session_window_start, '-'), \
             IFNULL(session_window_end, '-'), IFNULL(session_window_status, '-'), \
             auto_stop_on_warning, daily_quota, IFNULL(subscription_info, '-')) AS s \
             FROM claude_accounts ORDER BY id"
        ),
        [
            r#"18f71ec8-3f65-4595-a85e-6118e946f02a|2026-11-27 08:00:00.000000|2026-11-27 13:00:00.000000|allowed_warning|1|0|{"email":"fixture.primary@example.com","organizationName":"Fixture Org","organizationUuid":"0f1e2d3c-0000-4000-8000-00000000f001","subscriptionType":"claude_max","profileFetchedAt":"2026-11-27T08:00:00Z"}"#,
            r#"5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85|-|-|-|0|25|-"#,
            r#"c13d1300-502a-420d-9cc9-f52ce9d4e4b9|-|-|-|0|0|{"email":"fixture.dedicated@example.com"}"#,
            r#"cf4b5613-2155-415f-b30b-5fbc6d78b181|-|-|-|0|0|-"#,
        ]
    );
    let app = crate::support::spawn_app(env.config()).await;
    app.wait_for_health("healthy", std::time::Duration::from_secs(20))
        .await;
    for id in [
        "cf4b5613-2155-415f-b30b-5fbc6d78b181",
        "5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85",
    ] {
        let mut a = app.actors.router.get_account(id).await.unwrap().unwrap();
        a.base_url = Some(mock.url.clone());
        app.actors.router.save_account(a).await.unwrap();
    }
    let messages = app.url("/api/v1/messages");
    let sdk_body = serde_json::json!({"model": SONNET, "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}]});
    let (status, body) = send(&app.client, &messages, CC_ONLY.1, &SDK_HEADERS, &sdk_body).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(mock.message_count(), 0);
    let (status, body) = send(
        &app.client,
        &messages,
        CC_ONLY.1,
        &CLAUDE_CODE_HEADERS,
        &claude_code_body(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.message_count(), 1);

    // The group and its members came over; the group-bound key relays through them.
    assert_eq!(
        strings(
            &db,
            "SELECT CONCAT_WS('|', id, name, platform) AS s FROM account_groups"
        ),
        [format!("{}|b-console-pool|claude", GROUP_BOUND.2)]
    );
    assert_eq!(
        strings(
            &db,
            &format!(
                "SELECT id AS s FROM claude_accounts WHERE group_ids = '[\"{}\"]' ORDER BY id",
                GROUP_BOUND.2
            )
        ),
        [
            "5e51b40a-f8e6-46fe-99c6-6e3a7bddfc85",
            "cf4b5613-2155-415f-b30b-5fbc6d78b181"
        ]
    );
    let key = app
        .actors
        .router
        .get_key(GROUP_BOUND.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        key.claude_account_id,
        Some(format!("group:{}", GROUP_BOUND.2))
    );
    let mut seen = Vec::new();
    for i in 0..2 {
        let body = serde_json::json!({"model": SONNET, "max_tokens": 16,
            "messages": [{"role": "user", "content": format!("group {i}")}]});
        let (status, answer) = send(&app.client, &messages, GROUP_BOUND.1, &[], &body).await;
        assert_eq!(status, 200, "{answer}");
        let last = mock
            .received()
            .into_iter()
            .rev()
            .find(|r| r.path == "/v1/messages")
            .unwrap();
        seen.push(crate::relay::harness::credential_of(&last.headers));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "sk-fixture-console-14e5928149700254cf498d29466fa587",
            "sk-fixture-console-85977d8c93e4cb6875d5a416fbcc14f4"
        ],
        "both members of the group serve the key (least recently used first)"
    );
}
