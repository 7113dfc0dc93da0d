//! Test support: start real Keyward processes (`CARGO_BIN_EXE_keyward`) and a real echo upstream on
//! `127.0.0.1:0`, and send real HTTP. A child is killed on drop; its output is printed when a test fails.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "shared by several test binaries, each using a part"
)]
#![expect(
    clippy::unwrap_used,
    reason = "test support: a failed setup should panic at once"
)]

pub mod pg;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A running Keyward process.
pub struct Keyward {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    pub config_path: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Start the echo upstream in-process.
pub async fn echo_upstream() -> SocketAddr {
    keyward::echo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .0
}

/// The config every test starts from: ports 0, the given upstream, SQLite in `dir`, a bootstrap token.
pub const BOOTSTRAP: &str = "bootstrap-token-for-tests-0123456789";

pub fn base_config(dir: &Path, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "shutdown_grace = \"5s\"\n\
         [proxy]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nbootstrap_token = \"{BOOTSTRAP}\"\n\
         [store]\npath = \"{}\"\n\
         [upstream]\nurl = \"http://{upstream}\"\ntimeout = \"3s\"\nconnect_timeout = \"1s\"\n\
         {extra}\n",
        dir.join("keyward.db").display()
    )
}

impl Keyward {
    /// Start with `base_config` plus `extra` TOML, in a fresh temp dir.
    pub async fn start(upstream: SocketAddr, extra: &str) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = base_config(dir.path(), upstream, extra);
        Self::start_in(dir, &config, &[]).await
    }

    /// Start with a full config text in `dir` (reused across restarts), with extra environment variables.
    pub async fn start_in(dir: Arc<tempfile::TempDir>, config: &str, env: &[(&str, &str)]) -> Self {
        let config_path = dir.path().join("keyward.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "Listening" {
                        let _ = tx.send((
                            v["proxy"].as_str().unwrap().parse().unwrap(),
                            v["admin"].as_str().unwrap().parse().unwrap(),
                        ));
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let log3 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log3.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let (proxy, admin) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .unwrap_or_else(|_| {
                    panic!(
                        "keyward did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                });
        Self {
            child,
            proxy,
            admin,
            dir,
            config_path,
            log,
        }
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Admin call with the bootstrap token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.admin_as(&format!("Bearer {BOOTSTRAP}"), method, path, body)
            .await
    }

    /// Admin call with an `Authorization` value.
    pub async fn admin_as(
        &self,
        authorization: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut headers = vec![("authorization", authorization.to_owned())];
        if body.is_some() {
            headers.push(("content-type", "application/json".to_owned()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        send(method, &self.admin_url(path), &headers, body.into_bytes()).await
    }

    /// Create a key through the admin API; returns the response JSON (with clientSecret and encoded).
    pub async fn create_key(&self, body: Value) -> Value {
        let r = self.admin(Method::POST, "/apikeys", Some(body)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// The process log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- keyward log ---\n{}\n--- end ---", self.log_text());
        }
    }
}

/// Send one request and read the whole response.
pub async fn send(method: Method, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Resp {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// GET with headers.
pub async fn get(url: &str, headers: &[(&str, String)]) -> Resp {
    send(Method::GET, url, headers, Vec::new()).await
}

/// Poll `f` until it returns true, at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Write raw bytes over TCP and read the response head (bounded).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The Python with the third-party test clients (`tests/py/requirements.txt`): `KEYWARD_TEST_PYTHON`, else
/// `.venv/bin/python`. Missing: a failure under CI, a skip (with a message) elsewhere.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("KEYWARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: scripts/test.sh creates it (pip install -r tests/py/requirements.txt)",
            path.display()
        );
    }
    eprintln!(
        "skipped: {} is missing (run scripts/test.sh)",
        path.display()
    );
    None
}

/// Run a Python script from `tests/py` with arguments; returns stdout (panics with stderr on failure).
/// Async, so in-process servers of the calling test keep running meanwhile.
pub async fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/py")
                .join(script),
        )
        .args(args)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("python timed out")
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An upstream that answers every connection once, `delay` after its first read, with a 4-byte body `slow`
/// and `Connection: close`.
pub async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                    )
                    .await;
            });
        }
    });
    addr
}
