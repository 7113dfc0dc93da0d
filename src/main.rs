//! The `keyward` binary: CLI parsing, config loading (exit 64 on a bad config), tracing, and the subcommands
//! `serve`, `config check`, `keys create`, `echo` and `sign`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};

use keyward::app::{App, open_store};
use keyward::config::{Config, ConfigErrors};
use keyward::keys::view::{ApiKeyInput, ApiKeyView};
use keyward::sign::{SignScheme, sign_headers};

/// Exit code for a bad configuration (EX_USAGE from sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "A reverse-proxy authentication sidecar"
)]
struct Cli {
    /// Config file (TOML). Without it, defaults and KEYWARD_* variables apply.
    #[arg(long, short, global = true, env = "KEYWARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and admin listeners (the default).
    Serve,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage keys directly in the configured store.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a demo upstream that answers with what it received, as JSON.
    Echo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
    /// Sign a request (bearer, NWS4 or RFC 9421) and send it, or print the headers.
    Sign(SignArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and exit (0 valid, 64 invalid).
    Check {
        /// The file; defaults to --config.
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its credentials once.
    Create(CreateArgs),
    /// Import keys in bulk from TSV/CSV (header row) or JSON lines; all or nothing.
    Import {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// Unique name.
    #[arg(long)]
    name: String,
    /// Permissions, comma-separated (e.g. '*' or 'ApiKeyList,orders:*').
    #[arg(long, value_delimiter = ',')]
    permissions: Vec<String>,
    /// Activate the key (keys are inactive by default).
    #[arg(long)]
    active: bool,
    /// The user requests run as.
    #[arg(long)]
    user: Option<String>,
    /// The device requests run on.
    #[arg(long)]
    device: Option<String>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
    /// Expiry, RFC 3339.
    #[arg(long)]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Args)]
struct SignArgs {
    /// Scheme.
    #[arg(long, value_enum, default_value = "rfc9421")]
    scheme: SignScheme,
    /// The key's clientId.
    #[arg(long)]
    key_id: String,
    /// The key's clientSecret (or set KEYWARD_SIGN_SECRET).
    #[arg(long, env = "KEYWARD_SIGN_SECRET", hide_env_values = true)]
    secret: String,
    /// Method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Extra header, `Name: value` (repeatable; signed by NWS4).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Body, or @FILE.
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// Print the headers to add instead of sending.
    #[arg(long)]
    print_headers: bool,
    /// With --print-headers: print this many distinct signed requests, one per line, `Name: value` pairs
    /// separated by TABs, each with its own `X-Request-Nonce` (signed by NWS4), for load generators.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The absolute URL.
    url: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On one CPU a current-thread runtime serves the same connections without the work-stealing scheduler's
    // cross-thread wake-ups; with more CPUs, one worker per CPU. Either way the park hooks tell the upstream
    // write batch whether the runtime is busy (`runtime_load`).
    let workers = worker_threads();
    let built = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .on_thread_park(keyward::runtime_load::parked)
            .on_thread_unpark(keyward::runtime_load::unparked)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(workers)
            .on_thread_park(keyward::runtime_load::parked)
            .on_thread_unpark(keyward::runtime_load::unparked)
            .build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// How long an idle blocking-pool thread (store calls: the SQLite watch's poll each second, the admin API's
/// writes) waits for more work on a one-CPU runtime before it exits; tokio's default is 10 s.
///
/// While a process has a second thread, the kernel takes and drops a reference on the file of every system
/// call's descriptor (a single-threaded process's descriptor table cannot change under the call, so there it
/// skips them); with the default, the poll each second kept a blocking thread alive for good, and the proxy's
/// four or five system calls a request paid for it. With a short keep-alive the thread exits after the poll,
/// and a new one is started for the next (tens of microseconds a second).
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(50);

/// One worker per CPU this process may run on (respects taskset/cgroup affinity).
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => return serve(cli.config).await,
        Command::Config(ConfigCommand::Check { file }) => {
            let path = file.or(cli.config);
            return match load_config(path.as_ref()) {
                Ok(_) => {
                    println!(
                        "{}: ok",
                        path.map_or_else(|| "defaults".into(), |p| p.display().to_string())
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            };
        }
        Command::Keys(KeysCommand::Create(args)) => {
            let config = match load_config(cli.config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            create_key(&config, args).await
        }
        Command::Keys(KeysCommand::Import { file }) => {
            let config = match load_config(cli.config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            import_keys(&config, &file).await
        }
        Command::Echo { listen } => echo(listen).await,
        Command::Sign(args) => sign(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KEYWARD_"))
        .collect();
    let config =
        Config::load(path.map(PathBuf::as_path), &vars).map_err(|ConfigErrors(problems)| {
            eprintln!(
                "keyward: invalid configuration{}:",
                path.map_or_else(String::new, |p| format!(" in {}", p.display()))
            );
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::from(EXIT_CONFIG)
        })?;
    if let Some(key) = &config.master_key {
        if let Err(e) = keyward::keys::secret::install_master_key(key.expose()) {
            eprintln!("keyward: {e}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    Ok(config)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path.as_ref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(&config.log.level);
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "Startup failed");
            eprintln!("keyward: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(proxy = %app.proxy_addr(), admin = %app.admin_addr(), version = env!("CARGO_PKG_VERSION"), "Listening");
    app.run(shutdown_signal()).await;
    tracing::info!("Stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn create_key(config: &Config, args: CreateArgs) -> anyhow::Result<()> {
    let (store, _) = open_store(&config.store).context("opening the store")?;
    let input = ApiKeyInput {
        name: Some(args.name),
        permissions: Some(
            args.permissions
                .into_iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        is_active: Some(args.active),
        user_name: args.user,
        device_name: args.device,
        description: args.description,
        expires_at: args.expires_at,
        ..ApiKeyInput::default()
    };
    let v = input.validate(true).map_err(|problems| {
        anyhow::anyhow!(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.description))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let key = v.into_new_key(None, Utc::now());
    store.insert(key.clone()).await.context("saving the key")?;
    println!(
        "{}",
        serde_json::to_string_pretty(&ApiKeyView::with_secret(&key))?
    );
    eprintln!(
        "keyward: key created; clientSecret and encoded are shown only now. Store them safely."
    );
    Ok(())
}

/// `--count N --print-headers`: N distinct signed requests, one per line, TAB-separated headers.
fn print_many(
    args: &SignArgs,
    method: &http::Method,
    url: &http::Uri,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<()> {
    use std::io::Write;
    let authority = url
        .authority()
        .context("the URL needs a host")?
        .as_str()
        .to_owned();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..args.count {
        let mut request_headers = headers.to_vec();
        request_headers.push(("Host".to_owned(), authority.clone()));
        request_headers.push(("X-Request-Nonce".to_owned(), i.to_string()));
        let added = sign_headers(
            args.scheme,
            method,
            url,
            &request_headers,
            body,
            &args.key_id,
            &args.secret,
        )?;
        let line: Vec<String> = request_headers
            .iter()
            .chain(
                added
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("host")),
            )
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(out, "{}", line.join("\t"))?;
    }
    out.flush()?;
    Ok(())
}

async fn import_keys(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let keys = keyward::keys::import::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: nothing imported:\n{e}", file.display()))?;
    let n = keys.len();
    eprintln!(
        "keyward: {n} keys parsed and validated in {:.1}s; writing",
        started.elapsed().as_secs_f64()
    );
    let (store, _) = open_store(&config.store).context("opening the store")?;
    store
        .insert_many(keys)
        .await
        .context("writing the keys (nothing was imported)")?;
    eprintln!(
        "keyward: imported {n} keys into the {} store in {:.1}s",
        store.kind(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let (bound, task) = keyward::echo::spawn(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("keyward echo: listening on http://{bound}");
    tokio::select! {
        _ = task => {}
        () = shutdown_signal() => {}
    }
    Ok(())
}

async fn sign(args: SignArgs) -> anyhow::Result<()> {
    let url: http::Uri = args.url.parse().context("parsing the URL")?;
    let method = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .context("parsing the method")?;
    let body = match &args.data {
        Some(d) if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?
        }
        Some(d) => d.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if args.print_headers && args.count > 1 {
        return print_many(&args, &method, &url, &headers, &body);
    }
    let added = sign_headers(
        args.scheme,
        &method,
        &url,
        &headers,
        &body,
        &args.key_id,
        &args.secret,
    )?;
    if args.print_headers {
        for (k, v) in &added {
            println!("{k}: {v}");
        }
        return Ok(());
    }
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers.iter().chain(&added) {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .context("building the request")?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let response = client.request(req).await.context("sending the request")?;
    eprintln!("HTTP {}", response.status());
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the response")?
        .to_bytes();
    println!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}
