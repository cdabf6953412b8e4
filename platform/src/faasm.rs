//! The Faasm function API in a [`Linker`]: registers the `env`.`__faasm_*`
//! host functions, implemented engine-independently in
//! [`faaslet_hostapi::faasm`], for stores whose data implements
//! [`FaasmView`].
//!
//! Each host function is a typed closure (no per-call allocation) that
//! takes the store data and the caller's memory 0 together, and turns a
//! [`FaasmError`] (a bad guest pointer, an unterminated key, lock misuse)
//! into a trap whose message names the call.

use faaslet::{Caller, Error, Linker, Trap};
use faaslet_hostapi::faasm::LockTier;
use faaslet_hostapi::faasm::{self, FaasmCtx, FaasmEnv, FaasmError};
use faaslet_hostapi::memory::GuestMemory;
use faaslet_state::StateValue;
use std::os::fd::BorrowedFd;

/// Store data that holds a Faasm context.
pub trait FaasmView {
    /// The Faasm context of the running call.
    fn faasm(&mut self) -> &mut FaasmCtx;
}

/// A host call's view of its caller, as [`FaasmEnv`] wants it.
struct CallerEnv<'a, 'b, T> {
    caller: &'a mut Caller<'b, T>,
}

impl<T: FaasmView> FaasmEnv for CallerEnv<'_, '_, T> {
    fn parts(&mut self) -> (&mut FaasmCtx, GuestMemory<'_>) {
        let (data, mem) = self.caller.data_and_memory_raw();
        (data.faasm(), crate::wasi::guest_memory(mem))
    }
    fn grow_memory(&mut self, pages: u32) -> Option<u32> {
        let mem = self.caller.memory()?;
        self.caller
            .grow_memory(mem, pages as u64)
            .and_then(|old| u32::try_from(old).ok())
    }
    fn map_state(&mut self, value: &StateValue, len: usize) -> Option<Result<u32, FaasmError>> {
        let mem = self.caller.memory()?;
        let caller = &mut *self.caller;
        Some(
            value
                .with_segment(|fd, value_len| {
                    let fail = |reason: String| FaasmError::MapState {
                        key: value.name().to_string(),
                        reason,
                    };
                    if value_len < len {
                        return Err(fail(format!("the value has {value_len} bytes, not {len}")));
                    }
                    // SAFETY: `fd` is the value's memfd, open while we hold the
                    // value's lock (inside `with_segment`); the mapping keeps its
                    // own reference to the file afterwards.
                    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                    // SAFETY: a state memfd is never truncated (values only grow;
                    // shrinking zeroes bytes), so mapped pages stay inside the file.
                    let mapped = unsafe { caller.map_shared(mem, fd, len) };
                    let addr = mapped.map_err(|e| fail(e.to_string()))?;
                    u32::try_from(addr)
                        .map_err(|_| fail(format!("address {addr:#x} is past 4 GiB")))
                })
                .inspect(|&addr| {
                    // Pushes by other Faaslets collect what this guest writes
                    // through the mapping while it still runs.
                    if let Some(pages) = self.caller.written_pages(mem, addr as u64) {
                        value.add_writer(Box::new(MappedWrites { pages, len }));
                    }
                }),
        )
    }
    fn written(&mut self, addr: u32) -> Option<Result<Vec<std::ops::Range<u64>>, FaasmError>> {
        let mem = self.caller.memory()?;
        self.caller
            .take_written(mem, addr as u64)
            .map_err(|e| FaasmError::State(e.to_string()))
            .transpose()
    }
}

/// A Faaslet's live mapping of a state value, as the value sees it.
struct MappedWrites {
    pages: faaslet::WrittenPages,
    len: usize,
}

impl faaslet_state::LiveWrites for MappedWrites {
    fn take(&self) -> Option<Vec<std::ops::Range<usize>>> {
        // The mapping starts at byte 0 of the value: its offsets are the
        // value's. A failed scan leaves the whole mapping dirty.
        self.pages
            .take()
            .map(|r| r.unwrap_or_else(|_| std::iter::once(0..self.len).collect()))
    }
    fn is_live(&self) -> bool {
        self.pages.is_open()
    }
}

/// Collects, when a call ends, what its guest wrote through mapped state
/// pointers and did not push: those pages are marked dirty in their
/// values, so a later partial push (by any Faaslet of the process) sends
/// them. Call before the store's memory is reset or dropped.
pub fn harvest_writes<T: FaasmView>(store: &mut faaslet::Store<T>, instance: faaslet::Instance) {
    let maps = store.data_mut().faasm().shared_mappings();
    if maps.is_empty() {
        return;
    }
    let Some(mem) = instance.memory0(store) else {
        return;
    };
    for (addr, value) in maps {
        match mem.take_written(store, addr as u64) {
            Ok(Some(w)) => FaasmCtx::mark_written(&value, addr, &w),
            Ok(None) => {}
            // Untracked from here on: the whole mapping may have changed.
            Err(_) => value.mark_dirty(0, value.len()),
        }
    }
}

fn trap(name: &str, e: FaasmError) -> Trap {
    Trap::host(format!("{name}: {e}"))
}

/// Registers one host function: `$name`, with the listed wasm parameters,
/// calling `$body(env, args...)` (a `Result<R, FaasmError>`).
macro_rules! faasm_fn {
    ($linker:expr, $name:literal, |$env:ident $(, $p:ident : $t:ty)*| $body:expr) => {
        $linker
            .func_wrap("env", $name, |mut caller: Caller<'_, T> $(, $p: $t)*| {
                let $env = &mut CallerEnv { caller: &mut caller };
                $body.map_err(|e| trap($name, e))
            })?;
    };
}

/// Registers every Faasm API function under module `env`.
pub fn add_to_linker<T: FaasmView + 'static>(linker: &mut Linker<T>) -> Result<(), Error> {
    faasm_fn!(linker, "__faasm_read_input", |env, buf: u32, len: i32| {
        faasm::read_input(env, buf, len)
    });
    faasm_fn!(linker, "__faasm_write_output", |env, ptr: u32, len: i32| {
        faasm::write_output(env, ptr, len)
    });
    faasm_fn!(
        linker,
        "__faasm_chain_name",
        |env, name: u32, input: u32, len: i32| { faasm::chain_name(env, name, input, len) }
    );
    faasm_fn!(
        linker,
        "__faasm_chain_ptr",
        |env, func: u32, input: u32, len: i32| { faasm::chain_ptr(env, func, input, len) }
    );
    faasm_fn!(linker, "__faasm_await_call", |env, id: u32| {
        faasm::await_call(env, id)
    });
    faasm_fn!(
        linker,
        "__faasm_await_call_output",
        |env, id: u32, out: u32, len: u32| { faasm::await_call_output(env, id, out, len) }
    );
    faasm_fn!(
        linker,
        "__faasm_read_state",
        |env, key: u32, buf: u32, len: i32| { faasm::read_state(env, key, buf, len) }
    );
    faasm_fn!(
        linker,
        "__faasm_read_state_ptr",
        |env, key: u32, total: i32| { faasm::read_state_ptr(env, key, total) }
    );
    faasm_fn!(
        linker,
        "__faasm_write_state",
        |env, key: u32, data: u32, len: i32| { faasm::write_state(env, key, data, len) }
    );
    faasm_fn!(
        linker,
        "__faasm_write_state_offset",
        |env, key: u32, total: i32, offset: i32, data: u32, len: i32| {
            faasm::write_state_offset(env, key, total, offset, data, len)
        }
    );
    faasm_fn!(
        linker,
        "__faasm_read_state_offset",
        |env, key: u32, total: i32, offset: i32, buf: u32, len: i32| {
            faasm::read_state_offset(env, key, total, offset, buf, len)
        }
    );
    faasm_fn!(
        linker,
        "__faasm_read_state_offset_ptr",
        |env, key: u32, total: i32, offset: i32, len: i32| {
            faasm::read_state_offset_ptr(env, key, total, offset, len)
        }
    );
    faasm_fn!(
        linker,
        "__faasm_flag_state_dirty",
        |env, key: u32, total: i32| { faasm::flag_state_dirty(env, key, total) }
    );
    faasm_fn!(
        linker,
        "__faasm_flag_state_offset_dirty",
        |env, key: u32, total: i32, offset: i32, len: i32| {
            faasm::flag_state_offset_dirty(env, key, total, offset, len)
        }
    );
    faasm_fn!(
        linker,
        "__faasm_append_state",
        |env, key: u32, data: u32, len: i32| { faasm::append_state(env, key, data, len) }
    );
    faasm_fn!(
        linker,
        "__faasm_read_appended_state",
        |env, key: u32, buf: u32, len: i32, n: i32| faasm::read_appended_state(
            env, key, buf, len, n
        )
    );
    faasm_fn!(linker, "__faasm_clear_appended_state", |env, key: u32| {
        faasm::clear_appended_state(env, key)
    });
    faasm_fn!(linker, "__faasm_push_state", |env, key: u32| {
        faasm::push_state(env, key)
    });
    faasm_fn!(linker, "__faasm_push_state_partial", |env, key: u32| {
        faasm::push_state_partial(env, key)
    });
    faasm_fn!(
        linker,
        "__faasm_push_state_partial_mask",
        |env, key: u32, mask: u32| { faasm::push_state_partial_mask(env, key, mask) }
    );
    faasm_fn!(linker, "__faasm_pull_state", |env, key: u32, len: i32| {
        faasm::pull_state(env, key, len)
    });
    faasm_fn!(linker, "__faasm_lock_state_read", |env, key: u32| {
        faasm::lock_state(env, key, LockTier::Local, false)
    });
    faasm_fn!(linker, "__faasm_unlock_state_read", |env, key: u32| {
        faasm::unlock_state(env, key, LockTier::Local, false)
    });
    faasm_fn!(linker, "__faasm_lock_state_write", |env, key: u32| {
        faasm::lock_state(env, key, LockTier::Local, true)
    });
    faasm_fn!(linker, "__faasm_unlock_state_write", |env, key: u32| {
        faasm::unlock_state(env, key, LockTier::Local, true)
    });
    faasm_fn!(linker, "__faasm_lock_state_global_read", |env, key: u32| {
        faasm::lock_state(env, key, LockTier::Global, false)
    });
    faasm_fn!(
        linker,
        "__faasm_unlock_state_global_read",
        |env, key: u32| { faasm::unlock_state(env, key, LockTier::Global, false) }
    );
    faasm_fn!(
        linker,
        "__faasm_lock_state_global_write",
        |env, key: u32| { faasm::lock_state(env, key, LockTier::Global, true) }
    );
    faasm_fn!(
        linker,
        "__faasm_unlock_state_global_write",
        |env, key: u32| { faasm::unlock_state(env, key, LockTier::Global, true) }
    );
    faasm_fn!(linker, "__faasm_conf_flag", |env, key: u32| {
        faasm::conf_flag(env, key)
    });
    Ok(())
}
