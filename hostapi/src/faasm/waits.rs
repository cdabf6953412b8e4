//! Who waits for whom: a process-wide wait-for graph of running calls, so
//! a call that would wait for itself fails at once, naming the cycle,
//! instead of blocking until its deadline.
//!
//! Faasm's API makes such waits easy to write: a function takes a state
//! write lock, chains a child that takes the same lock, and awaits it. The
//! child waits for the lock, the parent for the child, and neither ends
//! before the deadline (every host-side wait is bounded by it, so this
//! never hangs, but the call fails late and says only that it timed out).
//!
//! Nodes are calls ([`CallId`], one per running Faaslet call, on its
//! thread from [`enter`] until the guard drops). Edges:
//!
//! * **await**: a call awaiting a chained call it started;
//! * **nested**: a call whose thread runs another call on top of it (a
//!   child run inline because the executor's queue was full, or any job an
//!   awaiting parent runs while it waits): the outer call cannot continue
//!   before the inner one returns;
//! * **lock**: a call waiting for a state lock, to every call holding it
//!   in a conflicting mode (a writer conflicts with everyone, a reader with
//!   writers).
//!
//! Each blocking wait (a lock that is not free, an await of a call that
//! has not finished) first adds its edge and searches the graph from it;
//! if the search comes back to the waiter, the wait would never end, and
//! it fails with the cycle described ([`Deadlock`]). Whoever closes a
//! cycle finds it, whichever order the waits come in. What this cannot
//! see, the deadline still bounds: holders in other processes (a global
//! lock held by a call on another worker), and calls forwarded to another
//! worker.
//!
//! The graph holds only the calls that wait or hold a lock at the moment,
//! so a search touches a handful of nodes; it sits behind one mutex,
//! taken only by calls about to block or taking or releasing a lock.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Identity of one running call, unique in the process.
pub type CallId = u64;

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// A fresh [`CallId`] (a parent assigns its child's before the child runs,
/// so that it can await it by identity).
pub fn new_call_id() -> CallId {
    NEXT_CALL.fetch_add(1, Ordering::Relaxed)
}

/// A lock, as the graph knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockId {
    /// The local lock of one state value object (its address, and its
    /// name for messages): workers in one process keep separate values.
    Local(usize, String),
    /// The global lock of a state key (one per name, cluster-wide).
    Global(String),
}

impl std::fmt::Display for LockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockId::Local(_, name) => write!(f, "local lock of state {name:?}"),
            LockId::Global(name) => write!(f, "global lock of state {name:?}"),
        }
    }
}

/// A wait that would never end: the cycle, described from the waiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deadlock: {0}")]
pub struct Deadlock(pub String);

#[derive(Debug, Clone)]
enum Target {
    Call { id: CallId, nested: bool },
    Lock { lock: LockId, write: bool },
}

#[derive(Default)]
struct Graph {
    next_edge: u64,
    /// Out-edges of each waiting call: (edge id, target).
    edges: HashMap<CallId, Vec<(u64, Target)>>,
    /// Holders of each lock: (edge id, holder, write).
    holders: HashMap<LockId, Vec<(u64, CallId, bool)>>,
}

static GRAPH: Mutex<Option<Graph>> = Mutex::new(None);

fn with_graph<R>(f: impl FnOnce(&mut Graph) -> R) -> R {
    let mut g = GRAPH.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Graph::default))
}

impl Graph {
    fn add_edge(&mut self, from: CallId, t: Target) -> u64 {
        self.next_edge += 1;
        let id = self.next_edge;
        self.edges.entry(from).or_default().push((id, t));
        id
    }

    fn remove_edge(&mut self, from: CallId, edge: u64) {
        if let Some(v) = self.edges.get_mut(&from) {
            v.retain(|(e, _)| *e != edge);
            if v.is_empty() {
                self.edges.remove(&from);
            }
        }
    }

    /// The calls `t` waits for.
    fn blockers(&self, t: &Target) -> Vec<(CallId, String)> {
        match t {
            Target::Call { id, nested } => {
                let why = if *nested {
                    format!("runs call {id} on its thread")
                } else {
                    format!("awaits call {id}")
                };
                vec![(*id, why)]
            }
            Target::Lock { lock, write } => self
                .holders
                .get(lock)
                .into_iter()
                .flatten()
                .filter(|(_, _, w)| *write || *w)
                .map(|(_, h, w)| {
                    let mode = if *w { "write" } else { "read" };
                    let want = if *write { "write" } else { "read" };
                    (
                        *h,
                        format!("waits to {want}-lock the {lock}, {mode}-held by call {h}"),
                    )
                })
                .collect(),
        }
    }

    /// A path from `start` (which `waiter` waits for, as `first`
    /// describes) back to `waiter`, described; `None` if there is none.
    fn cycle(&self, waiter: CallId, first: &Target) -> Option<String> {
        // Depth-first, remembering how each call was reached.
        let mut seen = HashSet::new();
        let mut stack: Vec<(CallId, Vec<String>)> = self
            .blockers(first)
            .into_iter()
            .map(|(c, why)| (c, vec![format!("call {waiter} {why}")]))
            .collect();
        while let Some((c, path)) = stack.pop() {
            if c == waiter {
                return Some(path.join(", which "));
            }
            if !seen.insert(c) {
                continue;
            }
            for (_, t) in self.edges.get(&c).into_iter().flatten() {
                for (next, why) in self.blockers(t) {
                    // Each hop's subject is the call the previous one named.
                    let mut p = path.clone();
                    p.push(why);
                    stack.push((next, p));
                }
            }
        }
        None
    }
}

/// An edge of the graph, removed when dropped (the wait ended).
#[derive(Debug)]
#[must_use = "the wait is over when this is dropped"]
pub struct Waiting {
    from: CallId,
    edge: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        with_graph(|g| g.remove_edge(self.from, self.edge));
    }
}

/// A lock held, as the graph knows it; dropped when the lock is released.
#[derive(Debug)]
#[must_use = "the holder is forgotten when this is dropped"]
pub struct Holding {
    lock: LockId,
    edge: u64,
}

impl Drop for Holding {
    fn drop(&mut self) {
        with_graph(|g| {
            if let Some(v) = g.holders.get_mut(&self.lock) {
                v.retain(|(e, _, _)| *e != self.edge);
                if v.is_empty() {
                    g.holders.remove(&self.lock);
                }
            }
        });
    }
}

fn wait(waiter: CallId, t: Target) -> Result<Waiting, Deadlock> {
    with_graph(|g| {
        if let Some(cycle) = g.cycle(waiter, &t) {
            return Err(Deadlock(cycle));
        }
        let edge = g.add_edge(waiter, t);
        Ok(Waiting { from: waiter, edge })
    })
}

/// `waiter` is about to block until `lock` is free for it: the edge, or
/// the cycle that wait would close.
pub fn wait_for_lock(waiter: CallId, lock: &LockId, write: bool) -> Result<Waiting, Deadlock> {
    wait(
        waiter,
        Target::Lock {
            lock: lock.clone(),
            write,
        },
    )
}

/// `waiter` is about to block until call `awaited` has finished.
pub fn wait_for_call(waiter: CallId, awaited: CallId) -> Result<Waiting, Deadlock> {
    wait(
        waiter,
        Target::Call {
            id: awaited,
            nested: false,
        },
    )
}

/// `holder` took `lock`.
pub fn hold(holder: CallId, lock: &LockId, write: bool) -> Holding {
    with_graph(|g| {
        g.next_edge += 1;
        let edge = g.next_edge;
        g.holders
            .entry(lock.clone())
            .or_default()
            .push((edge, holder, write));
        Holding {
            lock: lock.clone(),
            edge,
        }
    })
}

thread_local! {
    /// The calls running on this thread, innermost last.
    static RUNNING: RefCell<Vec<CallId>> = const { RefCell::new(Vec::new()) };
}

/// A call running on this thread (see [`enter`]).
#[derive(Debug)]
#[must_use = "the call is over when this is dropped"]
pub struct Running {
    id: CallId,
    _nested: Option<Waiting>,
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().rposition(|c| *c == self.id) {
                r.remove(i);
            }
        });
    }
}

/// Call `id` starts running on this thread: it is [`current`] until the
/// guard drops, and a call already running below it on this thread waits
/// for it meanwhile.
pub fn enter(id: CallId) -> Running {
    let outer = RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        let outer = r.last().copied();
        r.push(id);
        outer
    });
    // A new call waits for nothing yet, so this edge closes no cycle.
    let nested = outer.map(|o| {
        with_graph(|g| Waiting {
            from: o,
            edge: g.add_edge(o, Target::Call { id, nested: true }),
        })
    });
    Running {
        id,
        _nested: nested,
    }
}

/// The call running innermost on this thread, if any.
pub fn current() -> Option<CallId> {
    RUNNING.with(|r| r.borrow().last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(n: &str) -> LockId {
        LockId::Global(format!("test/{n}"))
    }

    #[test]
    fn a_parent_holding_a_lock_awaiting_a_child_waiting_for_it() {
        let (p, c) = (new_call_id(), new_call_id());
        let _held = hold(p, &lock("a"), true);
        // The child blocks first; the parent's await closes the cycle.
        let _w = wait_for_lock(c, &lock("a"), false).unwrap();
        let e = wait_for_call(p, c).unwrap_err();
        assert!(e.0.contains(&format!("call {p} awaits call {c}")), "{e}");
        assert!(e.0.contains("write-held by call"), "{e}");
        // The other order: the parent awaits first, the child's lock
        // wait closes it.
        drop(_w);
        let _a = wait_for_call(p, c).unwrap();
        let e = wait_for_lock(c, &lock("a"), true).unwrap_err();
        assert!(e.0.contains("global lock of state \"test/a\""), "{e}");
    }

    #[test]
    fn readers_do_not_wait_for_readers_and_released_locks_are_forgotten() {
        let (p, c) = (new_call_id(), new_call_id());
        let held = hold(p, &lock("b"), false);
        let _a = wait_for_call(p, c).unwrap();
        // A read lock held does not block a reader...
        drop(wait_for_lock(c, &lock("b"), false).unwrap());
        // ...but blocks a writer.
        assert!(wait_for_lock(c, &lock("b"), true).is_err());
        drop(held);
        drop(wait_for_lock(c, &lock("b"), true).unwrap());
    }

    #[test]
    fn a_call_run_inline_on_its_parents_thread_waits_for_the_parent_lock() {
        let p = new_call_id();
        let _outer = enter(p);
        let _held = hold(p, &lock("c"), true);
        let child = new_call_id();
        let inner = enter(child);
        assert_eq!(current(), Some(child));
        let e = wait_for_lock(child, &lock("c"), true).unwrap_err();
        assert!(
            e.0.contains(&format!("runs call {child} on its thread")),
            "{e}"
        );
        drop(inner);
        assert_eq!(current(), Some(p));
        // Unrelated calls on other locks are not deadlocks.
        let other = new_call_id();
        drop(wait_for_lock(other, &lock("c"), true).unwrap());
    }

    #[test]
    fn longer_cycles_through_several_calls_and_locks() {
        let (a, b, c) = (new_call_id(), new_call_id(), new_call_id());
        let _ha = hold(a, &lock("x"), true);
        let _hb = hold(b, &lock("y"), true);
        let _w1 = wait_for_call(a, b).unwrap(); // a awaits b
        let _w2 = wait_for_lock(b, &lock("z"), true).unwrap(); // nobody holds z
        let _hc = hold(c, &lock("z"), true);
        let e = wait_for_lock(c, &lock("x"), true).unwrap_err(); // c -> a -> b -> c
        assert!(e.0.contains(&format!("call {b}")), "{e}");
    }
}
