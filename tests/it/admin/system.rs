//! `/admin/system` and `/admin/audit` bodies.

use serde_json::json;

use super::{fields, start};

#[actix_rt::test]
async fn system_reports_mode_backends_usage_backlog_and_cache() {
    let admin = start().await;
    // A probe that times out on a loaded machine shows as `degraded` for a moment: the
    // body is checked once the relay reports itself healthy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let (status, body) = admin.get("/admin/system").await;
        assert_eq!(status, 200, "{body}");
        if body["data"]["status"] == "healthy" || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let d = &body["data"];
    assert_eq!(
        fields(d),
        [
            "backends",
            "cache",
            "mode",
            "status",
            "uptime",
            "usage",
            "usageBacklog",
            "version"
        ]
    );
    assert_eq!(d["mode"], "hybrid");
    assert_eq!(d["status"], "healthy");
    assert_eq!(d["backends"]["redis"]["connected"], true);
    assert_eq!(d["backends"]["mysql"]["connected"], true);
    assert_eq!(
        d["usageBacklog"],
        json!({"bytes": 0, "events": 0, "oldestSeconds": 0.0})
    );
    assert_eq!(d["usage"]["countersTrusted"], true);
    assert_eq!(
        fields(&d["cache"]),
        ["hitRate", "keyCacheHits", "keyCacheMisses"]
    );
    assert!(d["cache"]["hitRate"].is_f64());

    let (status, body) = admin.get("/admin/audit").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"success": true, "data": [], "pagination": {"limit": 100, "offset": 0, "total": 0}})
        )
    );
    admin.post("/admin/api-keys", &json!({"name": "k"})).await;
    let (_, body) = admin.get("/admin/audit").await;
    let entry = &body["data"][0];
    assert_eq!(
        fields(entry),
        [
            "action",
            "actor",
            "after",
            "before",
            "clientAddr",
            "createdAt",
            "id",
            "targetId",
            "targetType"
        ]
    );
    assert_eq!(entry["actor"], "admin-token");
    assert_eq!(entry["action"], "create");
    assert_eq!(entry["targetType"], "api_key");
    assert_eq!(entry["clientAddr"], "127.0.0.1");
    assert_eq!(entry["before"], serde_json::Value::Null);
    assert_eq!(entry["after"]["name"], "k");
    assert!(entry["after"].get("apiKey").is_none());
}
