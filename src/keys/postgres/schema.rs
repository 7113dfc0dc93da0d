//! Versioned schema migrations for the PostgreSQL store, recorded in `keyward_schema_migrations` and run at
//! start under an advisory lock, so that N sidecars starting at once apply each migration exactly once.

use tokio_postgres::Client;

use super::map_error;
use crate::keys::StoreError;

/// The advisory lock taken while migrating (`pg_advisory_xact_lock`); ASCII "keyward\0" as a big-endian i64.
pub(super) const MIGRATION_LOCK: i64 = 0x6b65_7977_6172_6400;

/// The notification channel every write notifies on.
pub const CHANNEL: &str = "keyward_keys";
/// The notification channel of registered upstreams.
pub const UPSTREAMS_CHANNEL: &str = "keyward_upstreams";

/// Migrations in order; migration `n` (1-based) is recorded as version `n`. Never edit one that has shipped:
/// append a new one.
///
/// 1. The key table. `record` (the serde form of [`crate::keys::ApiKey`]) is the only written column; the
///    indexed columns are generated from it, so a hand-made `UPDATE ... SET record = ...` (an operator, a
///    script) keeps them consistent. It is `json`, not `jsonb`: the text is kept as written, so a full load
///    reads it back without a conversion (jsonb's output function took 2.3 s of server time for 1 000 000
///    keys, json 1.0 s); edit it as `record = (record::jsonb || '{...}')::json`. A row trigger sends
///    `NOTIFY keyward_keys '{"op","id","version"}'` in the writing transaction, for Keyward's writes and
///    hand-made ones alike; it is delivered at commit. A bulk import sets `keyward.bulk = on` for its
///    transaction and sends one `{"op":"reload"}` instead of a notification per row.
/// 2. Registered upstreams: `keyward_upstreams`, the same layout, notifying `keyward_upstreams`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE keyward_api_keys (
    record    JSON   NOT NULL,
    id        TEXT   GENERATED ALWAYS AS (record->>'id') STORED NOT NULL,
    client_id TEXT   GENERATED ALWAYS AS (record->>'clientId') STORED NOT NULL,
    name      TEXT   GENERATED ALWAYS AS (record->>'name') STORED NOT NULL,
    version   BIGINT GENERATED ALWAYS AS ((record->>'_v')::bigint) STORED NOT NULL,
    CONSTRAINT keyward_api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT keyward_api_keys_client_id_key UNIQUE (client_id),
    CONSTRAINT keyward_api_keys_name_key UNIQUE (name)
);

CREATE FUNCTION keyward_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('keyward.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id <> NEW.id) THEN
        PERFORM pg_notify('keyward_keys',
            json_build_object('op', 'delete', 'id', OLD.id, 'version', OLD.version)::text);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    PERFORM pg_notify('keyward_keys',
        json_build_object('op', 'upsert', 'id', NEW.id, 'version', NEW.version)::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER keyward_api_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON keyward_api_keys
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_key_change();
"#,
    // 2. Registered upstreams (DESIGN.md §9), laid out like the keys; a row trigger notifies
    //    `keyward_upstreams`, and every sidecar reloads its (small) set of upstreams on each notice.
    r#"
CREATE TABLE keyward_upstreams (
    record  JSON   NOT NULL,
    id      TEXT   GENERATED ALWAYS AS (record->>'id') STORED NOT NULL,
    name    TEXT   GENERATED ALWAYS AS (record->>'name') STORED NOT NULL,
    version BIGINT GENERATED ALWAYS AS ((record->>'_v')::bigint) STORED NOT NULL,
    CONSTRAINT keyward_upstreams_pkey PRIMARY KEY (id),
    CONSTRAINT keyward_upstreams_name_key UNIQUE (name)
);

CREATE FUNCTION keyward_notify_upstream_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keyward_upstreams', json_build_object('op', lower(TG_OP))::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER keyward_upstreams_notify
    AFTER INSERT OR UPDATE OR DELETE ON keyward_upstreams
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_upstream_change();
"#,
];

/// Apply every pending migration in one transaction, holding the advisory lock until it commits.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(map_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS keyward_schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(map_error)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM keyward_schema_migrations",
            &[],
        )
        .await
        .map_err(map_error)?;
    let done: i32 = row.try_get(0).map_err(map_error)?;
    let done = usize::try_from(done).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::Other(format!(
            "the database schema is at version {done}, newer than this build knows ({}): upgrade Keyward",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let version = i32::try_from(i + 1).map_err(|e| StoreError::Other(e.to_string()))?;
        tx.batch_execute(sql).await.map_err(map_error)?;
        tx.execute(
            "INSERT INTO keyward_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(map_error)?;
        tracing::info!(version, "Store schema migrated");
    }
    tx.commit().await.map_err(map_error)
}
