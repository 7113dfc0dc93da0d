//! Keyward: a reverse-proxy authentication sidecar. Every request carries an API key, as a bearer credential or
//! an HMAC signature (NWS4 or RFC 9421); Keyward checks it against an in-memory map, enforces the route's
//! claims, strips what a client could spoof, and forwards the request with the key's context as headers.
//! Keys are managed through the `/apikeys` admin API on a separate listener and persisted in SQLite.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod echo;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod runtime_load;
pub mod server;
pub mod sign;
pub mod timer;
pub mod upstreams;
