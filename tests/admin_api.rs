//! The `/apikeys` admin API, call by call, against a real Keyward process and a real SQLite file: every
//! success and every error status, with exact error bodies.
#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use common::{BOOTSTRAP, Keyward, echo_upstream, send};
use http::Method;
use serde_json::{Value, json};

async fn start() -> Keyward {
    Keyward::start(echo_upstream().await, "").await
}

fn bearer(key: &Value) -> String {
    format!("Bearer {}", key["encoded"].as_str().unwrap())
}

#[tokio::test]
async fn create_returns_secret_once_and_location() {
    let kw = start().await;
    let r = kw.admin(Method::POST, "/apikeys", Some(json!({"name": "pos-1", "userName": "alice", "deviceName": "till-7", "permissions": ["orders:*"], "isActive": true}))).await;
    assert_eq!(r.status, 201);
    let key = r.json();
    let id = key["id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        r.header("location"),
        Some(format!("/apikeys/{id}").as_str())
    );
    assert_eq!(key["clientId"].as_str().unwrap().len(), 40);
    assert_eq!(key["clientSecret"].as_str().unwrap().len(), 64);
    let encoded = base64_decode(key["encoded"].as_str().unwrap());
    assert_eq!(
        encoded,
        format!(
            "{}:{}",
            key["clientId"].as_str().unwrap(),
            key["clientSecret"].as_str().unwrap()
        )
    );
    assert_eq!(key["_v"], 1);
    assert_eq!(key["isActive"], true);
    assert_eq!(key["revoked"], false);
    assert!(key["createdAt"].as_str().unwrap().ends_with('Z'));
    // never again
    for path in [format!("/apikeys/{id}"), "/apikeys".to_owned()] {
        let body = kw.admin(Method::GET, &path, None).await;
        assert_eq!(body.status, 200);
        let text = String::from_utf8_lossy(&body.body).into_owned();
        assert!(
            !text.contains("clientSecret") && !text.contains("encoded"),
            "{text}"
        );
        assert!(!text.contains(key["clientSecret"].as_str().unwrap()));
    }
}

fn base64_decode(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

#[tokio::test]
async fn is_active_defaults_to_false_and_given_credentials_are_kept() {
    let kw = start().await;
    let key = kw
        .create_key(
            json!({"name": "k", "clientId": "my-client.01", "clientSecret": "s".repeat(40)}),
        )
        .await;
    assert_eq!(key["isActive"], false);
    assert_eq!(key["clientId"], "my-client.01");
    assert_eq!(key["clientSecret"], "s".repeat(40));
}

#[tokio::test]
async fn get_by_id_name_or_client_id() {
    let kw = start().await;
    let key = kw.create_key(json!({"name": "by-name"})).await;
    for handle in [
        key["id"].as_str().unwrap(),
        "by-name",
        key["clientId"].as_str().unwrap(),
    ] {
        let r = kw
            .admin(Method::GET, &format!("/apikeys/{handle}"), None)
            .await;
        assert_eq!(r.status, 200, "{handle}");
        assert_eq!(r.json()["id"], key["id"]);
    }
    let r = kw.admin(Method::GET, "/apikeys/nope", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"code": 404, "message": "not found", "stack": [{"code": 404, "description": "api key not found", "error": "not_found", "path": "id"}]})
    );
}

#[tokio::test]
async fn invalid_bodies_get_one_stack_entry_per_field_and_change_nothing() {
    let kw = start().await;
    let r = kw
        .admin(Method::POST, "/apikeys", Some(json!({"name": "", "description": "x".repeat(5000), "permissions": ["ok", "bad perm"], "clientSecret": "short"})))
        .await;
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["code"], 400);
    assert_eq!(body["message"], "invalid request");
    let paths: Vec<&str> = body["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["name", "description", "permissions[1]", "clientSecret"]
    );
    let r = kw
        .admin(
            Method::POST,
            "/apikeys",
            Some(json!({"name": "a", "isAdmin": true})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["stack"][0]["path"], "isAdmin");
    let r = kw
        .admin(
            Method::POST,
            "/apikeys",
            Some(json!({"name": "x".repeat(226)})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = send(
        Method::POST,
        &kw.admin_url("/apikeys"),
        &[
            ("authorization", format!("Bearer {BOOTSTRAP}")),
            ("content-type", "text/plain".into()),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = send(
        Method::POST,
        &kw.admin_url("/apikeys"),
        &[("authorization", format!("Bearer {BOOTSTRAP}"))],
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        Method::POST,
        &kw.admin_url("/apikeys"),
        &[("authorization", format!("Bearer {BOOTSTRAP}"))],
        vec![b' '; 70_000],
    )
    .await;
    assert_eq!(r.status, 413);
    let list = kw
        .admin(Method::GET, "/apikeys?$count=true", None)
        .await
        .json();
    assert_eq!(list["totalCount"], 0);
}

#[tokio::test]
async fn duplicate_name_or_client_id_is_409() {
    let kw = start().await;
    kw.create_key(json!({"name": "same", "clientId": "client-0001"}))
        .await;
    let r = kw
        .admin(Method::POST, "/apikeys", Some(json!({"name": "same"})))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["stack"][0]["path"], "name");
    let r = kw
        .admin(
            Method::POST,
            "/apikeys",
            Some(json!({"name": "other", "clientId": "client-0001"})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["stack"][0]["path"], "clientId");
}

#[tokio::test]
async fn list_query_syntax_paging_sorting_filters_and_x_filter() {
    let kw = start().await;
    for (name, user, active, perms) in [
        ("a-key", "alice", true, vec!["orders:read"]),
        ("b-key", "bob", false, vec!["orders:*"]),
        ("c-key", "alice", true, vec![]),
    ] {
        kw.create_key(
            json!({"name": name, "userName": user, "isActive": active, "permissions": perms}),
        )
        .await;
    }
    let names = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let all = kw.admin(Method::GET, "/apikeys", None).await.json();
    assert_eq!(
        (all["count"].as_u64(), all["totalCount"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(names(&all), ["a-key", "b-key", "c-key"]);
    let page = kw
        .admin(
            Method::GET,
            "/apikeys?$sort=name:desc&$skip=1&$take=1",
            None,
        )
        .await
        .json();
    assert_eq!(names(&page), ["b-key"]);
    assert_eq!(
        (page["count"].as_u64(), page["totalCount"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        names(
            &kw.admin(Method::GET, "/apikeys?$sort=-NAME", None)
                .await
                .json()
        ),
        ["c-key", "b-key", "a-key"]
    );
    assert_eq!(
        names(
            &kw.admin(Method::GET, "/apikeys?userName=alice&isActive=true", None)
                .await
                .json()
        ),
        ["a-key", "c-key"]
    );
    assert_eq!(
        names(
            &kw.admin(Method::GET, "/apikeys?name=in:a-key,c-key;neq:c-key", None)
                .await
                .json()
        ),
        ["a-key"]
    );
    assert_eq!(
        names(
            &kw.admin(Method::GET, "/apikeys?name=startswith:B", None)
                .await
                .json()
        ),
        ["b-key"]
    );
    assert_eq!(
        names(
            &kw.admin(Method::GET, "/apikeys?permissions=orders:read", None)
                .await
                .json()
        ),
        ["a-key"]
    );
    assert_eq!(
        names(
            &kw.admin(
                Method::GET,
                "/apikeys?createdAt=gt:2000-01-01T00:00:00Z",
                None
            )
            .await
            .json()
        )
        .len(),
        3
    );
    let counted = kw
        .admin(Method::GET, "/apikeys?$count=true&userName=alice", None)
        .await
        .json();
    assert_eq!(counted, json!({"count": 2, "totalCount": 2}));
    let r = send(
        Method::GET,
        &kw.admin_url("/apikeys"),
        &[
            ("authorization", format!("Bearer {BOOTSTRAP}")),
            ("x-filter", "userName=bob".into()),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(names(&r.json()), ["b-key"]);
    for bad in [
        "$take=1001",
        "$skip=x",
        "secret=1",
        "isActive=is:true",
        "$sort=secret",
        "createdAt=yesterday",
        "$bogus=1",
    ] {
        let r = kw
            .admin(Method::GET, &format!("/apikeys?{bad}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["code"], 400);
    }
}

#[tokio::test]
async fn put_creates_then_updates_with_optimistic_versions() {
    let kw = start().await;
    let id = "0123456789abcdef01234567";
    let r = kw
        .admin(
            Method::PUT,
            &format!("/apikeys/{id}"),
            Some(json!({"name": "put-key", "isActive": true})),
        )
        .await;
    assert_eq!(r.status, 201);
    let created = r.json();
    assert_eq!(created["id"], id);
    assert!(created["clientSecret"].is_string());
    // an edited GET body comes back with server fields: accepted, ignored
    let mut body = kw
        .admin(Method::GET, &format!("/apikeys/{id}"), None)
        .await
        .json();
    body["userName"] = json!("carol");
    body["createdAt"] = json!("1999-01-01T00:00:00.000Z");
    let r = kw
        .admin(Method::PUT, &format!("/apikeys/{id}"), Some(body.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let updated = r.json();
    assert_eq!(
        (updated["_v"].as_i64(), updated["userName"].as_str()),
        (Some(2), Some("carol"))
    );
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert!(updated.get("clientSecret").is_none());
    // stale _v
    let r = kw
        .admin(Method::PUT, &format!("/apikeys/{id}"), Some(body.clone()))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["stack"][0]["path"], "_v");
    // missing version
    let r = kw
        .admin(
            Method::PUT,
            &format!("/apikeys/{id}"),
            Some(json!({"name": "put-key"})),
        )
        .await;
    assert_eq!(r.status, 428);
    assert_eq!(r.json()["code"], 428);
    // If-Match works instead of _v
    let r = send(
        Method::PUT,
        &kw.admin_url(&format!("/apikeys/{id}")),
        &[
            ("authorization", format!("Bearer {BOOTSTRAP}")),
            ("if-match", "\"2\"".into()),
        ],
        json!({"name": "put-key", "isActive": true})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["_v"], 3);
    // immutable clientId and secret via PUT
    let r = kw
        .admin(
            Method::PUT,
            &format!("/apikeys/{id}"),
            Some(json!({"name": "put-key", "_v": 3, "clientId": "another-id"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = kw
        .admin(
            Method::PUT,
            &format!("/apikeys/{id}"),
            Some(json!({"name": "put-key", "_v": 3, "clientSecret": "x".repeat(40)})),
        )
        .await;
    assert_eq!(r.status, 400);
    // a new id must be 24 hex
    let r = kw
        .admin(
            Method::PUT,
            "/apikeys/not-an-id",
            Some(json!({"name": "n"})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn delete_returns_the_key_and_revoke_is_permanent() {
    let kw = start().await;
    let key = kw
        .create_key(json!({"name": "gone", "isActive": true}))
        .await;
    let id = key["id"].as_str().unwrap();
    let r = kw
        .admin(Method::PUT, &format!("/apikeys/{id}/revoke"), None)
        .await;
    assert_eq!(r.status, 200);
    let revoked = r.json();
    assert_eq!(revoked["revoked"], true);
    assert!(revoked["revokedAt"].is_string());
    let again = kw
        .admin(Method::PUT, &format!("/apikeys/{id}/revoke"), None)
        .await;
    assert_eq!(
        (again.status, again.json()["_v"].clone()),
        (200, revoked["_v"].clone())
    );
    // reactivating does not un-revoke
    let mut body = revoked.clone();
    body["isActive"] = json!(true);
    let r = kw
        .admin(Method::PUT, &format!("/apikeys/{id}"), Some(body))
        .await;
    assert_eq!(r.json()["revoked"], true);
    let r = kw
        .admin(Method::POST, &format!("/apikeys/{id}/rotate"), None)
        .await;
    assert_eq!(r.status, 409);
    let r = kw
        .admin(Method::DELETE, &format!("/apikeys/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], key["id"]);
    assert!(r.json().get("clientSecret").is_none());
    assert_eq!(
        kw.admin(Method::DELETE, &format!("/apikeys/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        kw.admin(Method::GET, &format!("/apikeys/{id}"), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn admin_requires_credentials_and_rights() {
    let kw = start().await;
    let r = send(Method::GET, &kw.admin_url("/apikeys"), &[], Vec::new()).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "a credential is required", "error_uri": null})
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = kw
        .admin_as("Bearer wrong-token", Method::GET, "/apikeys", None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_request");
    let lister = kw
        .create_key(json!({"name": "lister", "permissions": ["LIST_API_KEY"], "isActive": true}))
        .await;
    assert_eq!(
        kw.admin_as(&bearer(&lister), Method::GET, "/apikeys", None)
            .await
            .status,
        200
    );
    let r = kw
        .admin_as(
            &bearer(&lister),
            Method::POST,
            "/apikeys",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "insufficient_scope");
    let inactive = kw
        .create_key(json!({"name": "sleepy", "permissions": ["*"]}))
        .await;
    let r = kw
        .admin_as(&bearer(&inactive), Method::GET, "/apikeys", None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_description"], "the key is not active");
    // open endpoints
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            send(Method::GET, &kw.admin_url(path), &[], Vec::new())
                .await
                .status,
            200,
            "{path}"
        );
    }
    assert_eq!(kw.admin(Method::PATCH, "/apikeys", None).await.status, 405);
    assert_eq!(kw.admin(Method::GET, "/nothing", None).await.status, 404);
}

#[tokio::test]
async fn no_privilege_escalation() {
    let kw = start().await;
    let creator = kw.create_key(json!({"name": "creator", "permissions": ["ApiKeyCreate", "ApiKeyUpdate", "ApiKeyList", "orders:*"], "isActive": true})).await;
    let auth = bearer(&creator);
    assert_eq!(
        kw.admin_as(
            &auth,
            Method::POST,
            "/apikeys",
            Some(json!({"name": "ok", "permissions": ["orders:read", "orders:*"]}))
        )
        .await
        .status,
        201
    );
    for perms in [
        json!(["*"]),
        json!(["billing:read"]),
        json!(["ApiKeyDelete"]),
        json!(["SUPER_USER"]),
    ] {
        let r = kw
            .admin_as(
                &auth,
                Method::POST,
                "/apikeys",
                Some(json!({"name": "escalate", "permissions": perms})),
            )
            .await;
        assert_eq!(r.status, 403, "{perms}");
        assert_eq!(r.json()["error"], "insufficient_scope");
    }
    let mine = kw
        .admin_as(&auth, Method::GET, "/apikeys/ok", None)
        .await
        .json();
    let mut body = mine.clone();
    body["permissions"] = json!(["*"]);
    assert_eq!(
        kw.admin_as(&auth, Method::PUT, "/apikeys/ok", Some(body))
            .await
            .status,
        403
    );
    let alias = kw
        .create_key(json!({"name": "alias-admin", "permissions": ["SUPER_USER"], "isActive": true}))
        .await;
    assert_eq!(
        kw.admin_as(
            &bearer(&alias),
            Method::POST,
            "/apikeys",
            Some(json!({"name": "by-alias", "permissions": ["*"]}))
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn without_keys_or_token_the_admin_api_refuses_all() {
    let upstream = echo_upstream().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = common::base_config(dir.path(), upstream, "")
        .replace(&format!("bootstrap_token = \"{BOOTSTRAP}\""), "");
    let kw = Keyward::start_in(dir, &config, &[]).await;
    let r = kw.admin(Method::GET, "/apikeys", None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn rotate_with_grace_keeps_both_secrets_then_only_the_new() {
    let kw = start().await;
    let key = kw
        .create_key(json!({"name": "rot", "isActive": true, "permissions": ["ApiKeyList"]}))
        .await;
    let id = key["id"].as_str().unwrap();
    let r = kw
        .admin(
            Method::POST,
            &format!("/apikeys/{id}/rotate"),
            Some(json!({"gracePeriod": "2s"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let rotated = r.json();
    assert_ne!(rotated["clientSecret"], key["clientSecret"]);
    assert_eq!(rotated["clientId"], key["clientId"]);
    assert_eq!(rotated["_v"], 2);
    assert_eq!(
        kw.admin_as(&bearer(&key), Method::GET, "/apikeys", None)
            .await
            .status,
        200,
        "old secret in grace"
    );
    assert_eq!(
        kw.admin_as(&bearer(&rotated), Method::GET, "/apikeys", None)
            .await
            .status,
        200,
        "new secret"
    );
    let old_refused = common::eventually(std::time::Duration::from_secs(10), || async {
        kw.admin_as(&bearer(&key), Method::GET, "/apikeys", None)
            .await
            .status
            == 401
    })
    .await;
    assert!(
        old_refused,
        "the old secret must stop working after the grace period"
    );
    assert_eq!(
        kw.admin_as(&bearer(&rotated), Method::GET, "/apikeys", None)
            .await
            .status,
        200
    );
    // no grace: the old secret stops at once
    let r = kw
        .admin(Method::POST, &format!("/apikeys/{id}/rotate"), None)
        .await
        .json();
    assert_eq!(
        kw.admin_as(&bearer(&rotated), Method::GET, "/apikeys", None)
            .await
            .status,
        401
    );
    assert_eq!(
        kw.admin_as(&bearer(&r), Method::GET, "/apikeys", None)
            .await
            .status,
        200
    );
    let r = kw
        .admin(
            Method::POST,
            &format!("/apikeys/{id}/rotate"),
            Some(json!({"gracePeriod": "forever"})),
        )
        .await;
    assert_eq!(r.status, 400);
}
