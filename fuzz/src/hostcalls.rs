//! The `hostcalls` target: every WASI preview1 and Faasm host call, driven
//! with fuzzer-chosen arguments and in fuzzer-chosen order, through the
//! platform's own linking glue (`faaslet_platform::wasi` and `::faasm`).
//!
//! A guest module, generated once per engine, imports every host function
//! the platform defines and exports a thin wrapper `cN` per import with the
//! same signature, so a call reaches the host exactly as a guest's would
//! (through the host stub, with the caller's memory). Each input: a fresh
//! store and instance, the fuzzer's bytes copied into guest memory, then up
//! to 48 calls whose arguments are biased to the interesting values
//! (pointers near 0, near the end of memory and past it, huge lengths).
//!
//! What must hold: the host never panics or crashes (a host write outside
//! the guest's memory would fault outside JIT code and kill the process);
//! every call returns a value or a trap; the store stays within its memory
//! limit; and once the store is dropped the process holds no more file
//! descriptors than before (nothing a guest opened leaks).

use arbitrary::{Result, Unstructured};
use faaslet::{Engine, FuncType, Instance, Linker, Module, Store, StoreLimits, Val, ValType};
use faaslet_hostapi::faasm::{FaasmCtx, NoChaining};
use faaslet_hostapi::wasi::{MountMode, Output, WasiCtx};
use faaslet_platform::faasm::FaasmView;
use faaslet_platform::wasi::WasiView;
use faaslet_state::LocalStateStore;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Store data: a WASI and a Faasm context, as a Faaslet has.
pub struct Host {
    wasi: WasiCtx,
    faasm: FaasmCtx,
}

impl WasiView for Host {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
}

impl FaasmView for Host {
    fn faasm(&mut self) -> &mut FaasmCtx {
        &mut self.faasm
    }
}

/// Linear memory a fuzzed store may hold.
pub const MEMORY_LIMIT: u64 = 16 << 20;

/// Host calls per input, at most.
const MAX_CALLS: usize = 48;

/// One engine's linker and guest module.
pub struct Harness {
    engine: Engine,
    linker: Linker<Host>,
    module: Module,
    /// (import module, name, type), in the order of the guest's `cN`.
    imports: Vec<(String, String, FuncType)>,
}

/// A directory the guests get read-only (a file and a subdirectory).
fn mount_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("faaslet-fuzz-hostcalls-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("fuzz mount dir");
        std::fs::write(dir.join("file"), b"0123456789").expect("fuzz mount file");
        dir
    })
}

fn new_host(input: Vec<u8>) -> Host {
    let wasi = WasiCtx::builder()
        .arg("fuzz")
        .env("K", "V")
        .stdout(Output::Capture)
        .stderr(Output::Capture)
        .capture_limit(1 << 20)
        .max_open_fds(64)
        .mount(mount_dir().clone(), "/data", MountMode::ReadOnly)
        .build()
        .expect("wasi context");
    let faasm = FaasmCtx::new(
        input,
        Arc::new(LocalStateStore::new()),
        Box::new(NoChaining),
    );
    Host { wasi, faasm }
}

fn wat_type(ty: &ValType) -> &'static str {
    match ty {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::FuncRef => "funcref",
        ValType::ExternRef => "externref",
        ValType::ExnRef => "exnref",
        ValType::AnyRef => "anyref",
    }
}

impl Harness {
    fn new(engine: Engine) -> Harness {
        let mut linker = Linker::new(&engine);
        faaslet_platform::wasi::add_to_linker(&mut linker).expect("link wasi");
        faaslet_platform::faasm::add_to_linker(&mut linker).expect("link faasm");
        let mut store = Store::new(&engine, new_host(Vec::new()));
        let mut imports = Vec::new();
        for (module, names) in [("wasi_snapshot_preview1", WASI), ("env", FAASM)] {
            for name in names {
                let Some(ext) = linker.get(&mut store, module, name) else {
                    panic!("{module}.{name} is not defined: update the fuzz list");
                };
                let f = ext.into_func().expect("a function");
                imports.push((module.to_string(), name.to_string(), f.ty(&store)));
            }
        }
        let mut wat = String::from("(module\n");
        let sig = |ty: &FuncType| {
            let p: Vec<_> = ty.params.iter().map(wat_type).collect();
            let r: Vec<_> = ty.results.iter().map(wat_type).collect();
            format!("(param {}) (result {})", p.join(" "), r.join(" "))
        };
        for (i, (m, n, ty)) in imports.iter().enumerate() {
            wat.push_str(&format!(
                "(import \"{m}\" \"{n}\" (func $i{i} {}))\n",
                sig(ty)
            ));
        }
        wat.push_str("(memory (export \"memory\") 2)\n");
        for (i, (_, _, ty)) in imports.iter().enumerate() {
            let args: String = (0..ty.params.len())
                .map(|k| format!("local.get {k} "))
                .collect();
            wat.push_str(&format!(
                "(func (export \"c{i}\") {} {args} call $i{i})\n",
                sig(ty)
            ));
        }
        wat.push(')');
        let module = Module::new(&engine, &wat).expect("the host-call guest compiles");
        Harness {
            engine,
            linker,
            module,
            imports,
        }
    }
}

thread_local! {
    /// The two harnesses (guard pages, explicit checks) of this thread
    /// (libFuzzer runs inputs on one).
    static HARNESSES: std::cell::RefCell<Option<[Harness; 2]>> = const { std::cell::RefCell::new(None) };
}

/// An i32 argument: mostly pointers and lengths near the edges of memory.
fn arg_i32(u: &mut Unstructured<'_>, mem_len: u32) -> Result<i32> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => u.int_in_range(0..=64u32)? as i32,
        1 => u.int_in_range(0..=4096u32)? as i32,
        2 => mem_len.wrapping_sub(u.int_in_range(0..=64u32)?) as i32,
        3 => mem_len.wrapping_add(u.int_in_range(0..=64u32)?) as i32,
        4 => u32::MAX.wrapping_sub(u.int_in_range(0..=64u32)?) as i32,
        5 => i32::MAX.wrapping_sub(u.int_in_range(0..=64i32)?),
        6 => u.int_in_range(0..=8u32)? as i32,
        _ => u.arbitrary()?,
    })
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs one input (see the module docs).
pub fn run(data: &[u8]) -> Result<()> {
    HARNESSES.with(|cell| {
        let mut hs = cell.borrow_mut();
        let hs = hs.get_or_insert_with(|| {
            let [g, e] = crate::engines();
            [Harness::new(g.clone()), Harness::new(e.clone())]
        });
        // A process-wide resource made on first use (the userfaultfd of
        // state write tracking, say) looks like a leak once; a real leak
        // grows on every run of the same input.
        let before = open_fds();
        run_with(hs, data)?;
        let after = open_fds();
        if after > before {
            run_with(hs, data)?;
            run_with(hs, data)?;
            let again = open_fds();
            assert!(
                again <= after,
                "descriptors leaked: {before} open before, {after} after one run, {again} after three"
            );
        }
        Ok(())
    })
}

fn run_with(hs: &mut [Harness; 2], data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let h = &mut hs[usize::from(u.arbitrary::<bool>()?)];
    {
        let n = u.int_in_range(0..=64usize)?;
        let input: Vec<u8> = u.bytes(n)?.to_vec();
        let mut store = Store::new(&h.engine, new_host(input));
        store.set_limits(StoreLimits {
            memory_bytes: MEMORY_LIMIT,
            ..StoreLimits::default()
        });
        store.set_epoch_deadline(crate::DEADLINE_TICKS);
        let inst: Instance = h
            .linker
            .instantiate(&mut store, &h.module)
            .expect("the host-call guest instantiates");
        let mem = inst.get_memory(&mut store, "memory").expect("memory");
        let n = u.int_in_range(0..=1024usize)?;
        let seed = u.bytes(n)?;
        mem.write(&mut store, 0, seed).expect("seed fits");
        for _ in 0..u.int_in_range(1..=MAX_CALLS)? {
            let i = u.choose_index(h.imports.len())?;
            let ty = &h.imports[i].2;
            let mem_len = mem.data_size(&store) as u32;
            let mut args = Vec::with_capacity(ty.params.len());
            for p in ty.params.iter() {
                args.push(match p {
                    ValType::I32 => Val::I32(arg_i32(&mut u, mem_len)?),
                    ValType::I64 => Val::I64(match u.int_in_range(0..=2u8)? {
                        0 => u.int_in_range(0..=1 << 20)?,
                        1 => -1,
                        _ => u.arbitrary()?,
                    }),
                    _ => unreachable!("host calls take integers"),
                });
            }
            let f = inst
                .get_func(&mut store, &format!("c{i}"))
                .expect("wrapper");
            let mut results = vec![Val::I32(0); ty.results.len()];
            if let Err(e) = f.call(&mut store, &args, &mut results) {
                let trap = e.as_trap().map(|t| t.kind);
                // proc_exit, an interruption, or a host error: this
                // instance is done (its state may be half-changed).
                if trap.is_none() {
                    panic!("{} failed without a trap: {e}", h.imports[i].1);
                }
                break;
            }
            assert!(
                store.memory_bytes() <= MEMORY_LIMIT,
                "{} took the store past its memory limit",
                h.imports[i].1
            );
        }
    }
    Ok(())
}

/// WASI preview1 functions the platform defines.
pub const WASI: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Faasm functions the platform defines (chaining answers "unknown
/// function" here: `NoChaining`).
pub const FAASM: &[&str] = &[
    "__faasm_read_input",
    "__faasm_write_output",
    "__faasm_chain_name",
    "__faasm_chain_ptr",
    "__faasm_await_call",
    "__faasm_await_call_output",
    "__faasm_read_state",
    "__faasm_read_state_ptr",
    "__faasm_write_state",
    "__faasm_write_state_offset",
    "__faasm_read_state_offset",
    "__faasm_read_state_offset_ptr",
    "__faasm_flag_state_dirty",
    "__faasm_flag_state_offset_dirty",
    "__faasm_append_state",
    "__faasm_read_appended_state",
    "__faasm_clear_appended_state",
    "__faasm_push_state",
    "__faasm_push_state_partial",
    "__faasm_push_state_partial_mask",
    "__faasm_pull_state",
    "__faasm_lock_state_read",
    "__faasm_unlock_state_read",
    "__faasm_lock_state_write",
    "__faasm_unlock_state_write",
    "__faasm_lock_state_global_read",
    "__faasm_unlock_state_global_read",
    "__faasm_lock_state_global_write",
    "__faasm_unlock_state_global_write",
    "__faasm_conf_flag",
];
