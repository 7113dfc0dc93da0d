//! `KeyCache`: the in-memory map every request is authenticated from, indexed by client id, key id and name.
//!
//! Lookups are O(1) DashMap reads; a full reload builds fresh indexes and swaps them in atomically, so a
//! request never sees a half-loaded map.

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use dashmap::DashMap;

use super::{ApiKey, ChangeEvent, KeyState};
use crate::auth::prekeyed::PrekeyedHmac;
use crate::policy::ClaimSet;

/// A cached key with its claims prepared for fast checks.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key.
    pub key: ApiKey,
    /// Its permissions as a claim set.
    pub claims: ClaimSet,
    /// What a key prepares on its first request (only keys that make requests pay for it). Boxed: an unused
    /// key pays one pointer, not six header values and a signing-key slot (a million keys load at start).
    in_use: std::sync::OnceLock<Box<InUse>>,
}

/// What a key keeps once it makes requests.
#[derive(Debug)]
struct InUse {
    /// Its context header values, encoded once.
    context: [Option<http::HeaderValue>; 6],
    /// Its current secret's NWS4 signing key for the day its last request was signed.
    nws4_day_keys: crate::auth::nws4::DayKeys,
    /// Its current secret as an RFC 9421 HMAC key, prekeyed.
    hmac_key: PrekeyedHmac,
    /// Its context fields as request-head lines, with the name prefix they were written under.
    context_lines: std::sync::OnceLock<(Box<str>, Box<[u8]>)>,
}

/// The indexes of one generation of the map.
#[derive(Default)]
struct Indexes {
    by_client_id: Index<ClientId>,
    by_id: Index<Id>,
    by_name: Index<Name>,
}

/// Which field of a key an [`Index`] is keyed by.
trait Field {
    fn of(key: &ApiKey) -> &str;
}

struct ClientId;
struct Id;
struct Name;

impl Field for ClientId {
    fn of(key: &ApiKey) -> &str {
        &key.client_id
    }
}

impl Field for Id {
    fn of(key: &ApiKey) -> &str {
        &key.id
    }
}

impl Field for Name {
    fn of(key: &ApiKey) -> &str {
        &key.name
    }
}

/// One index: a concurrent set of entries hashed and compared by one of their fields, so it holds no copy of
/// that field (with a million keys, three indexes of copied strings were about 200 MB of the resident size).
struct Index<F: Field>(DashMap<Indexed<F>, ()>);

/// An entry as its own index key: hashes and compares as `F::of(&entry.key)`, and is `Borrow<str>` for lookups.
struct Indexed<F: Field>(Arc<KeyEntry>, std::marker::PhantomData<F>);

impl<F: Field> Indexed<F> {
    fn field(&self) -> &str {
        F::of(&self.0.key)
    }
}

impl<F: Field> std::borrow::Borrow<str> for Indexed<F> {
    fn borrow(&self) -> &str {
        self.field()
    }
}

impl<F: Field> std::hash::Hash for Indexed<F> {
    // As `str` hashes: `Borrow<str>` requires the same hash for the same text.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.field().hash(state);
    }
}

impl<F: Field> PartialEq for Indexed<F> {
    fn eq(&self, other: &Self) -> bool {
        self.field() == other.field()
    }
}

impl<F: Field> Eq for Indexed<F> {}

impl<F: Field> Default for Index<F> {
    fn default() -> Self {
        Self(DashMap::default())
    }
}

impl<F: Field> Index<F> {
    fn with_capacity(n: usize) -> Self {
        Self(DashMap::with_capacity(n))
    }

    fn get(&self, field: &str) -> Option<Arc<KeyEntry>> {
        self.0.get(field).map(|r| Arc::clone(&r.key().0))
    }

    /// Insert `entry`, replacing (in one step, under the shard's lock) an entry with the same field.
    fn put(&self, entry: Arc<KeyEntry>) {
        match self.0.entry(Indexed(entry, std::marker::PhantomData)) {
            dashmap::Entry::Occupied(o) => {
                o.replace_entry(());
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(());
            }
        }
    }

    fn remove(&self, field: &str) -> Option<Arc<KeyEntry>> {
        self.0.remove(field).map(|(k, ())| k.0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn entries(&self) -> impl Iterator<Item = Arc<KeyEntry>> + '_ {
        self.0.iter().map(|r| Arc::clone(&r.key().0))
    }

    fn for_each(&self, mut f: impl FnMut(&KeyEntry)) {
        self.0.iter().for_each(|r| f(&r.key().0));
    }
}

/// The in-memory key map.
#[derive(Default)]
pub struct KeyCache {
    current: ArcSwap<Indexes>,
}

/// How many keys are in each state (for the `keyward_keys{state}` gauge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Usable now.
    pub active: u64,
    /// `isActive = false`.
    pub inactive: u64,
    /// Revoked.
    pub revoked: u64,
    /// Expired.
    pub expired: u64,
}

// === impl KeyEntry ===

impl KeyEntry {
    /// Prepare a key for the cache.
    pub fn new(mut key: ApiKey) -> Self {
        // A decoded list keeps its growth capacity (four slots for one or two permissions): a million keys
        // are held for the life of the process, so hold them at their size.
        key.permissions.shrink_to_fit();
        if let Some(schemes) = key.schemes.as_mut() {
            schemes.shrink_to_fit();
        }
        let claims = ClaimSet::from_permissions(key.permissions.iter().map(String::as_str));
        Self {
            key,
            claims,
            in_use: std::sync::OnceLock::new(),
        }
    }
}

impl KeyEntry {
    /// The context header values (see [`crate::proxy::headers::context_values`]), encoded once.
    pub fn context(&self) -> &[Option<http::HeaderValue>; 6] {
        &self.in_use().context
    }

    /// The context fields as `name: value\r\n` lines under the name `prefix` (see
    /// [`crate::proxy::headers::KeyContext::write_lines`]), written by `write` the first time they are asked
    /// for; `None` for a prefix other than that first one (one proxy, one prefix: not in practice).
    pub fn context_lines(&self, prefix: &str, write: impl FnOnce() -> Vec<u8>) -> Option<&[u8]> {
        let (written_for, lines) = self
            .in_use()
            .context_lines
            .get_or_init(|| (prefix.into(), write().into()));
        (**written_for == *prefix).then_some(&**lines)
    }

    /// The NWS4 signing keys for `timestamp`'s date, in [`ApiKey::hmac_secrets`] order: the current secret's
    /// kept for the day, a rotated-out one's (tried only after the current one failed) derived each time.
    pub fn nws4_signing_keys<'a>(
        &'a self,
        timestamp: &'a str,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = PrekeyedHmac> + 'a {
        let current = self
            .in_use()
            .nws4_day_keys
            .signing_key(self.key.client_secret.expose(), timestamp);
        std::iter::once(current).chain(
            self.key.hmac_secrets(now).skip(1).map(move |secret| {
                crate::auth::nws4::prekeyed_signing_key(secret.expose(), timestamp)
            }),
        )
    }

    /// The RFC 9421 HMAC keys, in [`ApiKey::hmac_secrets`] order: the current secret's kept, a rotated-out
    /// one's (tried only after the current one failed) keyed each time.
    pub fn hmac_keys(&self, now: DateTime<Utc>) -> impl Iterator<Item = PrekeyedHmac> + '_ {
        std::iter::once(self.in_use().hmac_key.clone()).chain(
            self.key
                .hmac_secrets(now)
                .skip(1)
                .map(|secret| PrekeyedHmac::new(secret.expose().as_bytes())),
        )
    }

    fn in_use(&self) -> &InUse {
        self.in_use.get_or_init(|| {
            Box::new(InUse {
                context: crate::proxy::headers::context_values(&self.key),
                nws4_day_keys: crate::auth::nws4::DayKeys::default(),
                hmac_key: PrekeyedHmac::new(self.key.client_secret.expose().as_bytes()),
                context_lines: std::sync::OnceLock::new(),
            })
        })
    }
}

// === impl Indexes ===

impl Indexes {
    fn with_capacity(n: usize) -> Self {
        Self {
            by_client_id: Index::with_capacity(n),
            by_id: Index::with_capacity(n),
            by_name: Index::with_capacity(n),
        }
    }

    /// Fresh indexes of a full key set's entries: the three maps are filled on separate threads, since a
    /// million keys are loaded at start.
    fn of_entries(entries: &[Arc<KeyEntry>]) -> Self {
        let fresh = Self::with_capacity(entries.len());
        std::thread::scope(|scope| {
            scope.spawn(|| entries.iter().for_each(|e| fresh.by_id.put(Arc::clone(e))));
            scope.spawn(|| {
                entries
                    .iter()
                    .for_each(|e| fresh.by_client_id.put(Arc::clone(e)));
            });
            entries
                .iter()
                .for_each(|e| fresh.by_name.put(Arc::clone(e)));
        });
        fresh
    }

    /// The cached entry if `key` equals it, else a new entry.
    fn entry_for(&self, key: ApiKey) -> Arc<KeyEntry> {
        match self.by_id.get(&key.id) {
            Some(same) if same.key == key => same,
            _ => Arc::new(KeyEntry::new(key)),
        }
    }

    fn upsert(&self, key: ApiKey) {
        if let Some(old) = self.by_id.get(&key.id) {
            if old.key.version > key.version || old.key == key {
                // An older change arriving late, or this sidecar's own change read back from the store: the
                // entry stays (with what it prepared on its first request).
                return;
            }
            if old.key.name != key.name {
                self.by_name.remove(old.key.name.as_str());
            }
            if old.key.client_id != key.client_id {
                self.by_client_id.remove(old.key.client_id.as_str());
            }
        }
        let entry = Arc::new(KeyEntry::new(key));
        self.by_client_id.put(Arc::clone(&entry));
        self.by_name.put(Arc::clone(&entry));
        self.by_id.put(entry);
    }

    fn delete(&self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_client_id.remove(old.key.client_id.as_str());
            self.by_name.remove(old.key.name.as_str());
        }
    }
}

// === impl KeyCache ===

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply a change.
    pub fn apply(&self, event: ChangeEvent) {
        match event {
            ChangeEvent::Upsert(key) => self.current.load().upsert(*key),
            ChangeEvent::Delete(id) => self.current.load().delete(&id),
        }
    }

    /// Replace every key with `keys`, a full key set (ids, client ids and names unique), on this thread: for
    /// small sets. The stores' loaders convert keys with [`KeyCache::entry_for`] on their decoding threads
    /// and hand the entries to [`KeyCache::replace_entries`].
    pub fn replace_keys(&self, keys: impl IntoIterator<Item = ApiKey>) {
        let current = self.current.load();
        let entries = keys.into_iter().map(|key| current.entry_for(key)).collect();
        self.replace_entries(entries);
    }

    /// The entry for `key` in a full reload: the cached one if the key did not change (what it prepared on its
    /// first request stays), a new one otherwise. For loaders that prepare entries while they decode, then
    /// hand them to [`KeyCache::replace_entries`].
    pub fn entry_for(&self, key: ApiKey) -> Arc<KeyEntry> {
        self.current.load().entry_for(key)
    }

    /// Swap in a full key set's entries (as [`KeyCache::replace_keys`] does with keys): a request sees the old map
    /// or the new one, never a mix.
    pub fn replace_entries(&self, entries: Vec<Arc<KeyEntry>>) {
        self.current.store(Arc::new(Indexes::of_entries(&entries)));
    }

    /// The key with this client id (the authentication index).
    pub fn by_client_id(&self, client_id: &str) -> Option<Arc<KeyEntry>> {
        self.current.load().by_client_id.get(client_id)
    }

    /// The key with this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.current.load().by_id.get(id)
    }

    /// The key named by id, then name, then client id (seed 003: "by id or name").
    pub fn find(&self, id_or_name: &str) -> Option<Arc<KeyEntry>> {
        let idx = self.current.load();
        idx.by_id
            .get(id_or_name)
            .or_else(|| idx.by_name.get(id_or_name))
            .or_else(|| idx.by_client_id.get(id_or_name))
    }

    /// Every key (admin listing; never on the request path).
    pub fn snapshot(&self) -> Vec<Arc<KeyEntry>> {
        self.current.load().by_id.entries().collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.current.load().by_id.len()
    }

    /// True when no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count keys by state at `now`.
    pub fn state_counts(&self, now: DateTime<Utc>) -> StateCounts {
        let mut c = StateCounts::default();
        self.current
            .load()
            .by_id
            .for_each(|e| match e.key.state(now) {
                KeyState::Usable => c.active += 1,
                KeyState::Inactive => c.inactive += 1,
                KeyState::Revoked => c.revoked += 1,
                KeyState::Expired => c.expired += 1,
            });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(id: &str, client_id: &str, name: &str, version: i64) -> ApiKey {
        let now = Utc::now();
        ApiKey {
            client_id: client_id.into(),
            version,
            ..crate::keys::view::ApiKeyInput {
                name: Some(name.into()),
                permissions: Some(vec!["a:*".into()]),
                is_active: Some(true),
                ..Default::default()
            }
            .validate(true)
            .unwrap()
            .into_new_key(Some(id.into()), now)
        }
    }

    #[test]
    fn rename_moves_the_name_index() {
        let c = KeyCache::new();
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "old", 1))));
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "new", 2))));
        assert!(c.find("old").is_none());
        assert_eq!(c.find("new").map(|e| e.key.version), Some(2));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn an_update_replaces_the_entry_in_every_index() {
        // The indexes key on the entry itself: an update must replace the key too, not only the value.
        let c = KeyCache::new();
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 1))));
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 2))));
        assert_eq!(c.by_client_id("c1").map(|e| e.key.version), Some(2));
        assert_eq!(c.by_id("1").map(|e| e.key.version), Some(2));
        assert_eq!(c.find("n").map(|e| e.key.version), Some(2));
        let idx = c.current.load();
        for index_len in [idx.by_id.len(), idx.by_client_id.len(), idx.by_name.len()] {
            assert_eq!(index_len, 1);
        }
        let held = idx.by_name.get("n").map(|e| e.key.version);
        assert_eq!(held, Some(2));
    }

    #[test]
    fn a_key_being_updated_is_never_missing_from_lookups() {
        // Updates replace entries in place: a request racing an update finds the old or the new version,
        // never neither (a remove-then-insert would open a window where the key looks unknown: a 401).
        let c = Arc::new(KeyCache::new());
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 1))));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (c, done) = (Arc::clone(&c), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut misses = 0u32;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        misses += u32::from(c.by_client_id("c1").is_none());
                        misses += u32::from(c.find("n").is_none());
                    }
                    misses
                })
            })
            .collect();
        for version in 2..20_000 {
            c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", version))));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert_eq!(
                reader.join().ok(),
                Some(0),
                "a lookup missed a key being updated"
            );
        }
        assert_eq!(c.by_client_id("c1").map(|e| e.key.version), Some(19_999));
    }

    #[test]
    fn an_upsert_of_an_equal_key_keeps_the_entry() {
        let c = KeyCache::new();
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 1))));
        let cached = c.by_id("1").expect("cached");
        c.apply(ChangeEvent::Upsert(Box::new(cached.key.clone())));
        assert!(Arc::ptr_eq(&c.by_id("1").expect("cached"), &cached));
        let mut edited = cached.key.clone();
        edited.user_name = Some("someone".into());
        c.apply(ChangeEvent::Upsert(Box::new(edited)));
        assert_eq!(
            c.by_id("1")
                .and_then(|e| e.key.user_name.clone())
                .as_deref(),
            Some("someone")
        );
    }

    #[test]
    fn late_older_version_is_ignored() {
        let c = KeyCache::new();
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 3))));
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n", 2))));
        assert_eq!(c.by_client_id("c1").map(|e| e.key.version), Some(3));
    }

    #[test]
    fn a_reload_keeps_the_entries_of_unchanged_keys_only() {
        let c = KeyCache::new();
        for (id, version) in [("1", 1), ("2", 1), ("3", 1)] {
            let k = key(id, &format!("c{id}"), &format!("n{id}"), version);
            c.apply(ChangeEvent::Upsert(Box::new(k)));
        }
        let cached = |id: &str| c.by_id(id).expect("cached");
        let (one, two) = (cached("1"), cached("2"));
        // Key 2 comes back with a new secret and the same version (deleted and created again elsewhere).
        let mut changed = two.key.clone();
        changed.client_secret = super::super::secret::Secret::new("another secret".into());
        c.replace_keys([one.key.clone(), changed]);
        assert!(
            Arc::ptr_eq(&cached("1"), &one),
            "an unchanged key keeps its entry"
        );
        assert!(
            !Arc::ptr_eq(&cached("2"), &two),
            "a changed key gets a new entry"
        );
        assert!(cached("2").key.client_secret.matches(b"another secret"));
        assert!(c.by_id("3").is_none() && c.by_client_id("c3").is_none());
        assert_eq!(c.len(), 2);

        // The same through the loaders' pair: entries prepared one by one, then swapped in.
        let kept = c.entry_for(one.key.clone());
        assert!(Arc::ptr_eq(&kept, &one));
        let new = c.entry_for(key("4", "c4", "n4", 1));
        c.replace_entries(vec![kept, new]);
        assert!(Arc::ptr_eq(&cached("1"), &one));
        assert!(c.by_id("2").is_none() && c.find("n4").is_some());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn delete_and_reload_replace_indexes() {
        let c = KeyCache::new();
        c.apply(ChangeEvent::Upsert(Box::new(key("1", "c1", "n1", 1))));
        c.apply(ChangeEvent::Delete("1".into()));
        assert!(c.by_client_id("c1").is_none());
        c.apply(ChangeEvent::Upsert(Box::new(key("2", "c2", "n2", 1))));
        c.replace_keys([key("3", "c3", "n3", 1)]);
        assert!(c.by_client_id("c2").is_none());
        assert!(c.find("n3").is_some());
        assert!(c.find("c3").is_some());
    }
}
