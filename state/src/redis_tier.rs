//! [`RedisTier`]: the global tier on a Redis server.
//!
//! Connections are pooled; a failed command drops its connection, so after
//! a Redis restart the next call reconnects (calls in between fail with
//! [`StateError::Global`]). Every connection has read and write timeouts,
//! so an unreachable server fails a call instead of hanging it.

use crate::error::StateError;
use crate::global::{ByteSource, GlobalTier, LockMode};
use redis::{Client, Connection, Script};
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const WRITE_LOCK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0";
const READ_LOCK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1";
const WRITE_UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";
const APPEND: &str = r"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1";

/// The global tier on Redis (`redis://HOST:PORT[/DB]`).
pub struct RedisTier {
    client: Client,
    addr: String,
    pool: Mutex<Vec<Connection>>,
    write_lock: Script,
    read_lock: Script,
    write_unlock: Script,
    append: Script,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A [`ByteSource`] as one argument of a Redis command, copied straight
/// into the command's buffer (which is reserved for it first): a push
/// copies the value once, as a plain `SET` of a host buffer does.
struct SourceArg<'a>(&'a dyn ByteSource);

impl redis::ToRedisArgs for SourceArg<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.reserve_space_for_args([self.0.len()]);
        let mut w = out.writer_for_next_arg();
        // The command's buffer is a Vec: writing to it cannot fail, and a
        // source writes exactly its length (a short write would be a bug
        // in the source, caught by the server's reply length checks).
        let _ = self.0.write_to(&mut w);
    }
}

fn global(op: &'static str, e: impl std::fmt::Display) -> StateError {
    StateError::Global {
        op,
        cause: e.to_string(),
    }
}

impl RedisTier {
    /// Connects to `url` and checks the server answers (PING); an
    /// unreachable server is an error naming the address.
    pub fn connect(url: &str) -> Result<RedisTier, StateError> {
        let client = Client::open(url)
            .map_err(|e| global("connect", format!("bad Redis URL {url:?}: {e}")))?;
        let t = RedisTier {
            client,
            addr: url.to_string(),
            pool: Mutex::new(Vec::new()),
            write_lock: Script::new(WRITE_LOCK),
            read_lock: Script::new(READ_LOCK),
            write_unlock: Script::new(WRITE_UNLOCK),
            append: Script::new(APPEND),
        };
        t.with("connect", |c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| match e {
                StateError::Global { cause, .. } => {
                    global("connect", format!("Redis at {url} unreachable: {cause}"))
                }
                e => e,
            })?;
        Ok(t)
    }

    /// The server's URL.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn open(&self) -> redis::RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    /// Runs `f` on a pooled connection; on failure the connection is
    /// dropped (the next call reconnects).
    /// Runs `f` on a pooled connection (opened if none is free; dropped,
    /// not pooled, if `f` fails), for other users of the same Redis (the
    /// platform's cluster membership); errors name `op` and the address.
    pub fn with<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<R>,
    ) -> Result<R, StateError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut c = match pooled {
            Some(c) => c,
            None => self
                .open()
                .map_err(|e| global(op, format!("{}: {e}", self.addr)))?,
        };
        match f(&mut c) {
            Ok(r) => {
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                Ok(r)
            }
            Err(e) => Err(global(op, format!("{}: {e}", self.addr))),
        }
    }
}

fn lock_keys(key: &str) -> (String, String) {
    (format!("{key}:w"), format!("{key}:r"))
}

impl GlobalTier for RedisTier {
    fn len(&self, key: &str) -> Result<usize, StateError> {
        self.with("pull", |c| redis::cmd("STRLEN").arg(key).query(c))
    }
    fn get_range(&self, key: &str, range: Range<usize>) -> Result<Vec<u8>, StateError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.with("pull", |c| {
            redis::cmd("GETRANGE")
                .arg(key)
                .arg(range.start)
                .arg(range.end - 1)
                .query(c)
        })
    }
    fn get_head(&self, key: &str, max: usize) -> Result<(usize, Vec<u8>), StateError> {
        if max == 0 {
            return Ok((self.len(key)?, Vec::new()));
        }
        // STRLEN and GETRANGE in one MULTI/EXEC: one round trip, and the
        // two agree (no push can fall between them).
        let mut p = redis::pipe();
        p.atomic()
            .cmd("STRLEN")
            .arg(key)
            .cmd("GETRANGE")
            .arg(key)
            .arg(0)
            .arg(max - 1);
        self.with("pull", |c| p.query(c))
    }
    fn set(&self, key: &str, data: &dyn ByteSource) -> Result<(), StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(SourceArg(data));
        self.with("push", |c| cmd.query(c))
    }
    fn set_ranges(&self, key: &str, runs: &[(usize, &dyn ByteSource)]) -> Result<(), StateError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic();
        for (o, d) in runs {
            p.cmd("SETRANGE")
                .arg(key)
                .arg(*o)
                .arg(SourceArg(*d))
                .ignore();
        }
        self.with("push", |c| p.query(c))
    }
    fn append(&self, key: &str, data: &[u8], max: u64) -> Result<bool, StateError> {
        self.with("append", |c| {
            self.append
                .key(key)
                .arg(data)
                .arg(max)
                .invoke::<i64>(c)
                .map(|r| r == 1)
        })
    }
    fn appended(&self, key: &str, start: u64, n: u64) -> Result<Vec<Vec<u8>>, StateError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.with("read_appended", |c| {
            redis::cmd("LRANGE")
                .arg(key)
                .arg(start)
                .arg(start + n - 1)
                .query(c)
        })
    }
    fn appended_len(&self, key: &str) -> Result<u64, StateError> {
        self.with("read_appended", |c| redis::cmd("LLEN").arg(key).query(c))
    }
    fn clear_appended(&self, key: &str) -> Result<(), StateError> {
        self.with("clear_appended", |c| redis::cmd("DEL").arg(key).query(c))
    }
    fn try_lock(
        &self,
        key: &str,
        mode: LockMode,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StateError> {
        let (w, r) = lock_keys(key);
        let script = match mode {
            LockMode::Write => &self.write_lock,
            LockMode::Read => &self.read_lock,
        };
        let ms = lease.as_millis().max(1) as u64;
        self.with("lock", |c| {
            script
                .key(&w)
                .key(&r)
                .arg(token)
                .arg(ms)
                .invoke::<i64>(c)
                .map(|r| r == 1)
        })
    }
    fn unlock(&self, key: &str, mode: LockMode, token: &str) -> Result<(), StateError> {
        let (w, r) = lock_keys(key);
        self.with("unlock", |c| match mode {
            LockMode::Write => self
                .write_unlock
                .key(&w)
                .arg(token)
                .invoke::<i64>(c)
                .map(drop),
            LockMode::Read => redis::cmd("ZREM")
                .arg(&r)
                .arg(token)
                .query::<i64>(c)
                .map(drop),
        })
    }
}
