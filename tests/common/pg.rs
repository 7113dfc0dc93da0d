//! PostgreSQL test support: the server from `KEYWARD_TEST_PG_URL` (started by `scripts/pg-test.sh`), and a fresh
//! database per test. Unset: a failure under CI, a skip elsewhere.

use std::process::Command;

use tokio_postgres::NoTls;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-test.sh");

/// The base URL, or `None` (skip) when unset outside CI.
pub fn pg_url() -> Option<String> {
    match std::env::var("KEYWARD_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "KEYWARD_TEST_PG_URL is unset but CI is set: start PostgreSQL first, e.g. eval \"$(scripts/pg-test.sh start)\""
        ),
        _ => {
            eprintln!("skipped: KEYWARD_TEST_PG_URL unset");
            None
        }
    }
}

/// `base` with its database replaced by `db`.
pub fn with_database(base: &str, db: &str) -> String {
    let (head, query) = base
        .split_once('?')
        .map_or((base, None), |(h, q)| (h, Some(q)));
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let prefix = head[after_scheme..]
        .find('/')
        .map_or(head, |i| &head[..after_scheme + i]);
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A connected client (its connection task spawned).
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A new empty database named `<prefix>_<random id>` on the server of `base`; returns its URL.
pub async fn fresh_database(base: &str, prefix: &str) -> String {
    let name = format!("{prefix}_{}", keyward::keys::new_id());
    sql(base)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    with_database(base, &name)
}

/// A private cluster from `scripts/pg-test.sh`, stopped and deleted on drop.
pub struct PrivateCluster {
    /// Its superuser URL.
    pub url: String,
    /// Its data directory.
    pub dir: String,
}

impl PrivateCluster {
    /// Start a new cluster on a free loopback port.
    pub fn start() -> Self {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg-test.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in: {text}"))
                .to_owned()
        };
        Self {
            url: var("KEYWARD_TEST_PG_URL"),
            dir: var("KEYWARD_TEST_PG_DIR"),
        }
    }

    /// `pg-test.sh CMD DIR` (kill, restart).
    pub fn run(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(cmd)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg-test.sh {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
