//! [`Cluster`]: workers that find each other, and share their functions,
//! through the Redis their global state tier lives in.
//!
//! A worker started with a Redis state tier joins the cluster: it
//! registers itself (address, capacity) with a heartbeat, and every
//! upload is published, so an upload to any worker makes the function
//! callable on every worker without compiling it again where the
//! configuration matches.
//!
//! # Key layout (all under `faaslet:`)
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `faaslet:workers` | set | ids of workers that registered |
//! | `faaslet:worker:{id}` | string, expires | `{"addr":..,"capacity":..}`; refreshed every [`HEARTBEAT`], expires after [`MEMBER_TTL`] |
//! | `faaslet:functions:epoch` | integer | bumped by every publish: heartbeats read `faaslet:functions` only when it moved |
//! | `faaslet:functions` | hash | `user/function` → SHA-256 (hex) of its wasm, plus `+idempotent` if marked so: the published version |
//! | `faaslet:wasm:{user}/{function}` | string | the wasm (a script function's script: its version ends `+python` or `+js`) |
//! | `faaslet:snap:{user}/{function}` | string | its Proto-Faaslet file |
//! | `faaslet:code:{key}` | string | a code-cache artefact (the key names the wasm *and* the engine configuration) |
//! | `faaslet:warm:{user}/{function}` | set | ids of the workers holding the function loaded, Proto-Faaslet ready: its warm set |
//!
//! A worker that stops heartbeating drops out of [`Cluster::members`]
//! within [`MEMBER_TTL`] (Redis expires its key; the set is pruned when
//! read). A publish is one `MULTI`/`EXEC`: other workers see the old
//! version or the new one, never a mix. Each worker compares its
//! functions' versions with the published ones at the first heartbeat
//! after a publish (the epoch moved) and forgets those that changed, so
//! the next call fetches the new upload.
//!
//! Artefacts and snapshots fetched from Redis go through the same checks
//! as local files (key, format, checksums, the module fingerprint): a
//! worker with another CPU or configuration, or a damaged entry, compiles
//! (or snapshots) its own and publishes that too.

use crate::worker::language::Language;
use faaslet_state::{RedisTier, StateError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a worker refreshes its registration and checks versions.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a registration outlives the last heartbeat.
pub const MEMBER_TTL: Duration = Duration::from_secs(4);

/// One live worker, as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its id (unique per process start).
    pub id: String,
    /// Where its HTTP API listens.
    pub addr: String,
    /// How many calls it runs at once.
    pub capacity: u32,
    /// Calls running or queued there at its last heartbeat.
    #[serde(default)]
    pub load: u32,
}

/// A function as published: its wasm and Proto-Faaslet file.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its version ([`version_of`]).
    pub version: String,
    /// Whether it is marked idempotent (a call lost with a worker may run
    /// again).
    pub idempotent: bool,
    /// Whether it is a Python function: `wasm` is then the script, which
    /// each worker captures on its own interpreter.
    pub python: bool,
    /// The language of a script function (Python or JavaScript), whose
    /// `wasm` is then the script; `None` for a wasm module.
    pub language: Option<Language>,
    /// The wasm.
    pub wasm: Vec<u8>,
    /// The Proto-Faaslet file, if one was published.
    pub snapshot: Option<Vec<u8>>,
}

/// This worker's membership of the cluster.
pub struct Cluster {
    redis: Arc<RedisTier>,
    me: Member,
    stop: Arc<AtomicBool>,
    /// The published versions seen at the last heartbeat.
    versions: Mutex<HashMap<String, String>>,
    /// The publish epoch those versions were read at (`None`: never read).
    epoch: Mutex<Option<Option<u64>>>,
    /// The other live workers at the last heartbeat, each with the calls
    /// forwarded to it that have not answered yet (added to its reported
    /// load when choosing).
    peers: Mutex<Vec<(Member, u32)>>,
    /// The functions this worker holds (it is in their warm sets).
    held: Mutex<HashSet<String>>,
    /// The warm sets (worker ids) of the functions forwarded in the last
    /// heartbeat interval, as read at the last heartbeat.
    warm: Mutex<HashMap<String, HashSet<String>>>,
    /// Functions forwarded since the last heartbeat: their warm sets are
    /// read at the next.
    wanted: Mutex<HashSet<String>>,
}

/// At most this many warm sets are read per heartbeat (the functions
/// forwarded most recently win; the rest are placed without one).
pub const WARM_SETS_PER_HEARTBEAT: usize = 256;

/// Bumped by every publish: a heartbeat reads the version map only when
/// it moved.
const EPOCH_KEY: &str = "faaslet:functions:epoch";

fn warm_key(name: &str) -> String {
    format!("faaslet:warm:{name}")
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("me", &self.me).finish()
    }
}

fn worker_key(id: &str) -> String {
    format!("faaslet:worker:{id}")
}

/// SHA-256 of `wasm`, in hex, followed by [`IDEMPOTENT_SUFFIX`] if the
/// function is marked idempotent: a function's version (so changing only
/// the mark is a new version too).
pub fn version_of(wasm: &[u8], idempotent: bool) -> String {
    use sha2::Digest;
    let mut v: String = sha2::Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if idempotent {
        v.push_str(IDEMPOTENT_SUFFIX);
    }
    v
}

/// The end of the version of a function marked idempotent.
pub const IDEMPOTENT_SUFFIX: &str = "+idempotent";

pub use crate::worker::language::{JS_SUFFIX, PYTHON_SUFFIX};

/// The published version of `script`, a `language` function: the SHA-256
/// of the script and the language's suffix.
pub fn script_version(language: Language, script: &[u8]) -> String {
    format!("{}{}", version_of(script, false), language.version_suffix())
}

impl Cluster {
    /// Registers this worker (at `addr`, running `capacity` calls at once)
    /// in the Redis behind `redis`, once; [`heartbeat`](Self::heartbeat)
    /// keeps the registration alive.
    pub fn join(redis: Arc<RedisTier>, addr: &str, capacity: u32) -> Result<Cluster, StateError> {
        let mut id = [0u8; 8];
        // SAFETY: getrandom writes at most 8 bytes into `id`.
        let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
        if n != id.len() as isize {
            return Err(StateError::Os("getrandom failed".into()));
        }
        let c = Cluster {
            redis,
            me: Member {
                id: id.iter().map(|b| format!("{b:02x}")).collect(),
                addr: addr.to_string(),
                capacity,
                load: 0,
            },
            stop: Arc::new(AtomicBool::new(false)),
            versions: Mutex::new(HashMap::new()),
            epoch: Mutex::new(None),
            peers: Mutex::new(Vec::new()),
            held: Mutex::new(HashSet::new()),
            warm: Mutex::new(HashMap::new()),
            wanted: Mutex::new(HashSet::new()),
        };
        c.register(0)?;
        c.refresh_peers()?;
        Ok(c)
    }

    /// This worker's registration.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Registers (or refreshes) this worker; if its registration had
    /// gone (Redis restarted, or an outage outlasted [`MEMBER_TTL`]), the
    /// functions it holds are put back in their warm sets.
    fn register(&self, load: u32) -> Result<(), StateError> {
        let me = Member {
            load,
            ..self.me.clone()
        };
        let json = serde_json::to_string(&me).expect("a member serialises");
        let key = worker_key(&self.me.id);
        let (old,): (Option<String>,) = self.redis.with("register", |c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(&json)
                .arg("PX")
                .arg(MEMBER_TTL.as_millis() as u64)
                .arg("GET")
                .cmd("SADD")
                .arg("faaslet:workers")
                .arg(&self.me.id)
                .ignore()
                .query(c)
        })?;
        if old.is_none() {
            let held: Vec<String> = locked(&self.held).iter().cloned().collect();
            self.advertise(&held)?;
        }
        Ok(())
    }

    fn advertise(&self, names: &[String]) -> Result<(), StateError> {
        if names.is_empty() {
            return Ok(());
        }
        self.redis.with("warm", |c| {
            let mut p = redis::pipe();
            for n in names {
                p.cmd("SADD").arg(warm_key(n)).arg(&self.me.id).ignore();
            }
            p.query::<()>(c)
        })
    }

    /// This worker now holds the functions `names` (`user/function`:
    /// loaded, Proto-Faaslets ready): it joins their warm sets.
    pub fn hold(&self, names: &[String]) -> Result<(), StateError> {
        locked(&self.held).extend(names.iter().cloned());
        self.advertise(names)
    }

    /// This worker no longer holds `name`: it leaves the warm set.
    pub fn release(&self, name: &str) -> Result<(), StateError> {
        locked(&self.held).remove(name);
        self.redis.with("warm", |c| {
            redis::cmd("SREM")
                .arg(warm_key(name))
                .arg(&self.me.id)
                .query::<()>(c)
        })
    }

    /// Reads the warm sets of the functions forwarded since the last
    /// heartbeat (at most [`WARM_SETS_PER_HEARTBEAT`]).
    fn refresh_warm(&self) -> Result<(), StateError> {
        let names: Vec<String> = locked(&self.wanted)
            .drain()
            .take(WARM_SETS_PER_HEARTBEAT)
            .collect();
        if names.is_empty() {
            locked(&self.warm).clear();
            return Ok(());
        }
        let sets: Vec<HashSet<String>> = self.redis.with("warm", |c| {
            let mut p = redis::pipe();
            for n in &names {
                p.cmd("SMEMBERS").arg(warm_key(n));
            }
            p.query(c)
        })?;
        // Workers that died without leaving linger in warm sets: prune
        // them (place() only ever picks live workers anyway).
        let live: HashSet<String> = locked(&self.peers)
            .iter()
            .map(|(m, _)| m.id.clone())
            .chain([self.me.id.clone()])
            .collect();
        let stale: Vec<(String, Vec<String>)> = names
            .iter()
            .zip(&sets)
            .map(|(n, set)| {
                (
                    n.clone(),
                    set.difference(&live).cloned().collect::<Vec<_>>(),
                )
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        if !stale.is_empty() {
            self.redis.with("warm", |c| {
                let mut p = redis::pipe();
                for (n, ids) in &stale {
                    p.cmd("SREM").arg(warm_key(n)).arg(ids).ignore();
                }
                p.query::<()>(c)
            })?;
        }
        *locked(&self.warm) = names.into_iter().zip(sets).collect();
        Ok(())
    }

    /// Refreshes the registration (with `load`, the calls running or queued
    /// here), the view of the other workers and the warm sets wanted, and
    /// returns the published versions (to compare with the functions this
    /// worker holds) if they changed since the last heartbeat: every
    /// publish bumps `faaslet:functions:epoch`, so a heartbeat reads the
    /// whole version map only after an upload somewhere.
    pub fn heartbeat(&self, load: u32) -> Result<Option<HashMap<String, String>>, StateError> {
        self.register(load)?;
        self.refresh_peers()?;
        self.refresh_warm()?;
        let epoch: Option<u64> = self
            .redis
            .with("heartbeat", |c| redis::cmd("GET").arg(EPOCH_KEY).query(c))?;
        let mut seen = locked(&self.epoch);
        if *seen == Some(epoch) {
            return Ok(None);
        }
        // Read the epoch again with the map, in one transaction: a
        // publish in between is then seen at the next heartbeat.
        let (epoch, v): (Option<u64>, HashMap<String, String>) =
            self.redis.with("heartbeat", |c| {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(EPOCH_KEY)
                    .cmd("HGETALL")
                    .arg("faaslet:functions")
                    .query(c)
            })?;
        *seen = Some(epoch);
        *locked(&self.versions) = v.clone();
        Ok(Some(v))
    }

    fn refresh_peers(&self) -> Result<(), StateError> {
        let members = self.members()?;
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        // Calls still out keep counting: the heartbeat's load was read
        // before some of them arrived.
        let out: HashMap<String, u32> = peers.iter().map(|(m, s)| (m.id.clone(), *s)).collect();
        *peers = members
            .into_iter()
            .filter(|m| m.id != self.me.id)
            .map(|m| {
                let sent = out.get(&m.id).copied().unwrap_or(0);
                (m, sent)
            })
            .collect();
        Ok(())
    }

    /// Where a call of `function` (`user/function`) that this worker would
    /// queue should run instead, given this worker's `load` (calls running
    /// or queued here) and `capacity`; `None`: here. The rule, for calls
    /// from clients and chained calls alike:
    ///
    /// 1. a free slot here: here (no hop, and the Proto-Faaslet is warm);
    /// 2. else the least loaded other worker with a free slot in the
    ///    function's warm set (it holds the function: no fetch), else the
    ///    least loaded other worker with a free slot;
    /// 3. else, every worker full, the one whose queue is shortest for its
    ///    capacity, if shorter than here (ties stay here): so a fan-out far
    ///    wider than the cluster queues evenly over it instead of piling up
    ///    on the worker that started it.
    ///
    /// Loads are the last heartbeat's figures plus the calls forwarded
    /// there that have not answered (a heartbeat that counted some of
    /// those counts them twice: the error is on the side of spreading).
    /// Warm sets are read at each heartbeat for the functions forwarded in
    /// the interval before, so the first forwards of a function choose
    /// without one. The choice counts as one more call there until
    /// [`done`](Self::done).
    pub fn place(&self, function: &str, load: u32, capacity: u32) -> Option<Member> {
        if load < capacity {
            return None;
        }
        if !locked(&self.wanted).contains(function) {
            locked(&self.wanted).insert(function.to_string());
        }
        let warm = locked(&self.warm);
        let warm_set = warm.get(function);
        let mut peers = locked(&self.peers);
        let busy = |m: &Member, sent: u32| m.load.saturating_add(sent);
        let free = |only_warm: bool| {
            peers
                .iter()
                .enumerate()
                .filter(|(_, (m, sent))| busy(m, *sent) < m.capacity)
                .filter(|(_, (m, _))| !only_warm || warm_set.is_some_and(|w| w.contains(&m.id)))
                .min_by_key(|(_, (m, sent))| (busy(m, *sent), u32::MAX - m.capacity))
                .map(|(i, _)| i)
        };
        let free = free(true).or_else(|| free(false));
        // Compared as fractions busy/capacity, by cross-multiplying.
        let shorter = |a: (u32, u32), b: (u32, u32)| {
            u64::from(a.0) * u64::from(b.1.max(1)) < u64::from(b.0) * u64::from(a.1.max(1))
        };
        let chosen = free.or_else(|| {
            let mut best: Option<(usize, (u32, u32))> = None;
            for (i, (m, sent)) in peers.iter().enumerate() {
                let q = (busy(m, *sent), m.capacity);
                if best.is_none_or(|(_, b)| shorter(q, b)) {
                    best = Some((i, q));
                }
            }
            best.filter(|(_, q)| shorter(*q, (load, capacity)))
                .map(|(i, _)| i)
        })?;
        let (m, sent) = &mut peers[chosen];
        *sent += 1;
        Some(m.clone())
    }

    /// The other workers known at the last heartbeat.
    pub fn peers(&self) -> Vec<Member> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// A call forwarded to `id` (by [`place`](Self::place)) has answered.
    pub fn done(&self, id: &str) {
        if let Some((_, sent)) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .find(|(m, _)| m.id == id)
        {
            *sent = sent.saturating_sub(1);
        }
    }

    /// Forgets `id` until the next heartbeat (it could not be reached).
    pub fn unreachable(&self, id: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(m, _)| m.id != id);
    }

    /// The workers whose registration has not expired (this one included).
    pub fn members(&self) -> Result<Vec<Member>, StateError> {
        let ids: Vec<String> = self.redis.with("members", |c| {
            redis::cmd("SMEMBERS").arg("faaslet:workers").query(c)
        })?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| worker_key(i)).collect();
        let infos: Vec<Option<String>> = self
            .redis
            .with("members", |c| redis::cmd("MGET").arg(&keys).query(c))?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, info) in ids.into_iter().zip(infos) {
            match info.and_then(|j| serde_json::from_str::<Member>(&j).ok()) {
                Some(m) => live.push(m),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Expired registrations: forget them (a worker that comes
            // back registers again).
            let _ = self.redis.with("members", |c| {
                redis::cmd("SREM")
                    .arg("faaslet:workers")
                    .arg(&gone)
                    .query::<()>(c)
            });
        }
        live.sort_by(|a, b| a.addr.cmp(&b.addr));
        Ok(live)
    }

    /// Publishes `user/function`: its wasm, Proto-Faaslet file and code
    /// artefact (under `code_key`), and its version (which carries the
    /// idempotent mark), in one transaction.
    pub fn publish(
        &self,
        name: &str,
        wasm: &[u8],
        idempotent: bool,
        snapshot: Option<&[u8]>,
        code: Option<(&str, &[u8])>,
    ) -> Result<(), StateError> {
        let version = version_of(wasm, idempotent);
        self.redis.with("publish", |c| {
            let mut p = redis::pipe();
            p.atomic()
                .cmd("SET")
                .arg(format!("faaslet:wasm:{name}"))
                .arg(wasm)
                .ignore();
            match snapshot {
                Some(s) => p.cmd("SET").arg(format!("faaslet:snap:{name}")).arg(s),
                None => p.cmd("DEL").arg(format!("faaslet:snap:{name}")),
            }
            .ignore();
            if let Some((key, bytes)) = code {
                p.cmd("SET")
                    .arg(format!("faaslet:code:{key}"))
                    .arg(bytes)
                    .ignore();
            }
            p.cmd("HSET")
                .arg("faaslet:functions")
                .arg(name)
                .arg(&version)
                .ignore();
            p.cmd("INCR").arg(EPOCH_KEY).ignore();
            p.query::<()>(c)
        })?;
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), version);
        Ok(())
    }

    /// Publishes the Python function `user/function` (its script; each
    /// worker captures its own Proto-Faaslet from it), in one transaction.
    pub fn publish_python(&self, name: &str, script: &[u8]) -> Result<(), StateError> {
        self.publish_script(Language::Python, name, script)
    }

    /// Publishes the `language` function `user/function` (its script;
    /// each worker captures its own Proto-Faaslet from it), in one
    /// transaction; its version ends with the language's suffix.
    pub fn publish_script(
        &self,
        language: Language,
        name: &str,
        script: &[u8],
    ) -> Result<(), StateError> {
        let version = script_version(language, script);
        self.redis.with("publish", |c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(format!("faaslet:wasm:{name}"))
                .arg(script)
                .ignore()
                .cmd("DEL")
                .arg(format!("faaslet:snap:{name}"))
                .ignore()
                .cmd("HSET")
                .arg("faaslet:functions")
                .arg(name)
                .arg(&version)
                .ignore()
                .cmd("INCR")
                .arg(EPOCH_KEY)
                .ignore()
                .query::<()>(c)
        })?;
        locked(&self.versions).insert(name.to_string(), version);
        Ok(())
    }

    /// Adds a code artefact (one this worker compiled for its own
    /// configuration) to the shared store.
    pub fn publish_code(&self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.redis.with("publish", |c| {
            redis::cmd("SET")
                .arg(format!("faaslet:code:{key}"))
                .arg(bytes)
                .query::<()>(c)
        })
    }

    /// Whether `user/function` is published (one round trip).
    pub fn has(&self, name: &str) -> Result<bool, StateError> {
        if self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
        {
            return Ok(true);
        }
        self.redis.with("lookup", |c| {
            redis::cmd("HEXISTS")
                .arg("faaslet:functions")
                .arg(name)
                .query(c)
        })
    }

    /// The published `user/function`, read in one transaction; `None` if
    /// it was never published. A wasm whose hash is not the published
    /// version (a damaged entry) is an error.
    pub fn fetch(&self, name: &str) -> Result<Option<Published>, StateError> {
        let (version, wasm, snapshot): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
            self.redis.with("fetch", |c| {
                redis::pipe()
                    .atomic()
                    .cmd("HGET")
                    .arg("faaslet:functions")
                    .arg(name)
                    .cmd("GET")
                    .arg(format!("faaslet:wasm:{name}"))
                    .cmd("GET")
                    .arg(format!("faaslet:snap:{name}"))
                    .query(c)
            })?;
        let (Some(version), Some(wasm)) = (version, wasm) else {
            return Ok(None);
        };
        let language = Language::from_version(&version);
        let idempotent = version.ends_with(IDEMPOTENT_SUFFIX);
        let expected = match language {
            Some(l) => script_version(l, &wasm),
            None => version_of(&wasm, idempotent),
        };
        if expected != version {
            return Err(StateError::Global {
                op: "fetch",
                cause: format!("the published wasm of {name} does not match its version {version}"),
            });
        }
        Ok(Some(Published {
            version,
            idempotent,
            python: language == Some(Language::Python),
            language,
            wasm,
            snapshot,
        }))
    }

    /// The code artefact published under `key`, if any.
    pub fn fetch_code(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.redis.with("fetch", |c| {
            redis::cmd("GET")
                .arg(format!("faaslet:code:{key}"))
                .query(c)
        })
    }

    /// Removes this worker's registration (on a clean shutdown).
    pub fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let key = worker_key(&self.me.id);
        let held: Vec<String> = locked(&self.held).drain().collect();
        let _ = self.redis.with("leave", |c| {
            let mut p = redis::pipe();
            for n in &held {
                p.cmd("SREM").arg(warm_key(n)).arg(&self.me.id).ignore();
            }
            p.cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("SREM")
                .arg("faaslet:workers")
                .arg(&self.me.id)
                .ignore()
                .query::<()>(c)
        });
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn left(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
