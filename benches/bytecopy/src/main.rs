//! A proxy that only copies bytes, as a floor to measure Keyward's fixed-rate latency against
//! (`benches/latency.sh` side `bytecopy`; BENCHMARKS.md §1).
//!
//! One current-thread tokio runtime, as Keyward's when pinned to one core; for each client connection one
//! upstream connection, `TCP_NODELAY` on both, and `tokio::io::copy_bidirectional` between them. No HTTP parsing,
//! no authentication, no header rewriting: whatever latency it shows at a fixed rate is the part of a proxy's
//! that no request-path code can remove. It reads `proxy.listen` and `upstream.url` (an `http://host:port`) from
//! the Keyward config file named by `KEYWARD_CONFIG`, with a line-based reader good enough for the files
//! `benches/common.sh` writes, so that latency.sh starts it as it starts a Keyward side.

use std::error::Error;

use tokio::net::{TcpListener, TcpStream};

/// The quoted value of the first line of `conf` that starts with `key`.
fn quoted(conf: &str, key: &str) -> Result<String, String> {
    conf.lines()
        .find(|line| line.trim_start().starts_with(key))
        .and_then(|line| line.split('"').nth(1))
        .map(str::to_owned)
        .ok_or_else(|| format!("no quoted `{key}` line in the config"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::var("KEYWARD_CONFIG").map_err(|_| "KEYWARD_CONFIG is not set")?;
    let conf = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let listen = quoted(&conf, "listen")?;
    let upstream = quoted(&conf, "url")?;
    let upstream = upstream
        .strip_prefix("http://")
        .ok_or("upstream.url must be http://host:port")?
        .trim_end_matches('/')
        .to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    })
}
