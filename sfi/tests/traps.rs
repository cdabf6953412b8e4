//! The trap guard, exercised with hand-assembled machine code (no JIT).
#![cfg(target_arch = "x86_64")]

mod common;

use common::{in_child, in_child_stderr, Code, NoTrapSites, DIV, LOAD, UD2};
use faaslet_sfi::{
    approximate_stack_pointer, catch_traps, catch_traps_in, init_traps, register_code,
    FaultRegions, Reservation, WASM_PAGE,
};
use std::sync::Arc;

#[test]
fn init_is_idempotent() {
    init_traps().unwrap();
    init_traps().unwrap();
}

#[test]
fn no_trap_is_ok() {
    let code = Code::new();
    let _reg = code.register_all();
    let mut ran = false;
    assert_eq!(
        catch_traps(|| {
            code.ret();
            ran = true;
        }),
        Ok(())
    );
    assert!(ran);
}

#[test]
fn ud2_is_sigill() {
    let code = Code::new();
    let _reg = code.register_all();
    let fault = catch_traps(|| code.ud2()).unwrap_err();
    assert_eq!(fault.signal, libc::SIGILL);
    assert_eq!(fault.pc, code.start() + UD2);
    // And again: the handler must still be armed (SA_NODEFER).
    for _ in 0..10 {
        assert_eq!(catch_traps(|| code.ud2()).unwrap_err().signal, libc::SIGILL);
    }
    assert!(catch_traps(|| code.ret()).is_ok(), "next call works");
}

#[test]
fn division_by_zero_is_sigfpe() {
    let code = Code::new();
    let _reg = code.register_all();
    let mut q = 0;
    assert!(catch_traps(|| q = code.div(7, 2)).is_ok());
    assert_eq!(q, 3);
    let fault = catch_traps(|| {
        code.div(1, 0);
    })
    .unwrap_err();
    assert_eq!(fault.signal, libc::SIGFPE);
    assert_eq!(fault.pc, code.start() + DIV + 3);
    let fault = catch_traps(|| {
        code.div(i32::MIN, -1);
    })
    .unwrap_err();
    assert_eq!(fault.signal, libc::SIGFPE);
}

#[test]
fn load_from_guard_is_sigsegv_with_address() {
    let code = Code::new();
    let _reg = code.register_all();
    let r = Reservation::new(WASM_PAGE).unwrap();
    // SAFETY: offset 123 is inside the reservation (arithmetic only).
    let addr = unsafe { r.base().add(123) };
    let fault = catch_traps(|| {
        code.load(addr);
    })
    .unwrap_err();
    assert_eq!(fault.signal, libc::SIGSEGV);
    assert_eq!(fault.fault_addr, addr as usize);
    assert_eq!(fault.pc, code.start() + LOAD);
    assert!(fault.to_string().contains("SIGSEGV"));

    r.make_accessible(0, WASM_PAGE).unwrap();
    // SAFETY: the page holding `addr` was made accessible just above.
    unsafe { *addr = 99 };
    let mut v = 0;
    assert!(catch_traps(|| v = code.load(addr)).is_ok());
    assert_eq!(v, 99);
}

/// A SIGSEGV at a trap site is a wasm trap only if its address lies in the
/// running store's reservations; anywhere else it is the engine's bug and
/// must crash loudly, naming the PC and the address.
#[test]
fn fault_outside_the_declared_regions_is_an_engine_crash() {
    let code = Code::new();
    let _reg = code.register_all();
    let mine = Reservation::new(WASM_PAGE).unwrap();
    let foreign = Reservation::new(WASM_PAGE).unwrap();
    let regions = FaultRegions::new();
    regions.add(mine.mapped_range());
    // The canary page in front and the guard are part of the region.
    for addr in [
        mine.mapped_range().start,
        mine.base() as usize + 123,
        mine.mapped_range().end - 1,
    ] {
        let fault = catch_traps_in(&regions, || {
            code.load(addr as *const u8);
        })
        .unwrap_err();
        assert_eq!((fault.signal, fault.fault_addr), (libc::SIGSEGV, addr));
    }
    // Elsewhere (another reservation, PROT_NONE just like a guard): crash.
    let addr = foreign.base() as usize + 8;
    let (status, stderr) = in_child_stderr(|| {
        let r = catch_traps_in(&regions, || {
            code.load(addr as *const u8);
        });
        eprintln!("caught as a trap: {r:?}");
    });
    assert_eq!(status, Err(libc::SIGSEGV), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "engine crash: SIGSEGV at trap site pc {:#x}, address {addr:#x}",
            code.start() + LOAD
        )),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("caught as a trap"), "stderr: {stderr}");
    // Nested scopes: the innermost's regions apply, and the outer ones are
    // back afterwards (also after a trap jumped out of the inner scope).
    let none = FaultRegions::new();
    let inner_fault = catch_traps_in(&regions, || {
        let r = catch_traps_in(&regions, || {
            code.ud2();
        });
        assert_eq!(r.unwrap_err().signal, libc::SIGILL);
        code.load(mine.base());
    });
    assert_eq!(inner_fault.unwrap_err().fault_addr, mine.base() as usize);
    let (status, _) = in_child_stderr(|| {
        let _ = catch_traps_in(&regions, || {
            let _ = catch_traps_in(&none, || {});
            // `none` is no longer active, `regions` is: caught.
            let _ = catch_traps_in(&none, || {
                code.load(mine.base());
            });
        });
    });
    assert_eq!(status, Err(libc::SIGSEGV), "the inner, empty regions apply");
    // Plain catch_traps declares no regions and keeps the old behaviour.
    assert!(catch_traps(|| {
        code.load(addr as *const u8);
    })
    .is_err());
}

#[test]
fn nested_innermost_catches() {
    let code = Code::new();
    let _reg = code.register_all();
    let mut inner = None;
    let mut after_inner = false;
    let outer = catch_traps(|| {
        inner = Some(catch_traps(|| code.ud2()));
        after_inner = true;
        // The outer scope is active again.
        code.div(1, 0);
        unreachable!();
    });
    assert_eq!(inner.unwrap().unwrap_err().signal, libc::SIGILL);
    assert!(after_inner);
    assert_eq!(outer.unwrap_err().signal, libc::SIGFPE);

    // Deeper nesting, trapping at each level on the way out.
    fn nest(code: &Code, depth: usize) -> Result<(), faaslet_sfi::Fault> {
        catch_traps(|| {
            if depth > 0 {
                assert!(nest(code, depth - 1).is_err());
            }
            code.ud2();
        })
    }
    assert!(nest(&code, 20).is_err());
    assert!(catch_traps(|| code.ret()).is_ok());
}

#[test]
fn panic_propagates() {
    let code = Code::new();
    let _reg = code.register_all();
    let caught = std::panic::catch_unwind(|| {
        let n = std::hint::black_box(7);
        let _ = catch_traps(|| panic!("boom {n}"));
    });
    let msg = caught.unwrap_err();
    assert_eq!(
        msg.downcast_ref::<String>().map(String::as_str),
        Some("boom 7")
    );
    // Panic inside a nested scope crosses both C frames safely.
    let caught = std::panic::catch_unwind(|| {
        let _ = catch_traps(|| {
            let _ = catch_traps(|| std::panic::panic_any(5u32));
        });
    });
    assert_eq!(caught.unwrap_err().downcast_ref::<u32>(), Some(&5));
    // Everything still works afterwards.
    assert_eq!(catch_traps(|| code.ud2()).unwrap_err().signal, libc::SIGILL);
    assert!(catch_traps(|| code.ret()).is_ok());
}

#[test]
fn many_threads_trap_concurrently() {
    const THREADS: usize = 4;
    const TRAPS: usize = 1000;
    let code = Arc::new(Code::new());
    let _reg = code.register_all();
    let r = Arc::new(Reservation::new(THREADS * WASM_PAGE).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let code = Arc::clone(&code);
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                for i in 0..TRAPS {
                    // SAFETY: inside this thread's page of the reservation (arithmetic only; loads run under catch_traps).
                    let addr = unsafe { r.base().add(t * WASM_PAGE + i % WASM_PAGE) };
                    match i % 3 {
                        0 => {
                            let f = catch_traps(|| {
                                code.load(addr);
                            })
                            .unwrap_err();
                            assert_eq!(f.signal, libc::SIGSEGV);
                            assert_eq!(f.fault_addr, addr as usize, "thread {t} trap {i}");
                        }
                        1 => {
                            let f = catch_traps(|| code.ud2()).unwrap_err();
                            assert_eq!(f.signal, libc::SIGILL);
                        }
                        _ => {
                            let f = catch_traps(|| {
                                code.div(i as i32, 0);
                            })
                            .unwrap_err();
                            assert_eq!(f.signal, libc::SIGFPE);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn registration_churn_while_trapping() {
    // Writers publish snapshots while other threads keep reading them from
    // the signal handler.
    let code = Arc::new(Code::new());
    let _reg = code.register_all();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trappers: Vec<_> = (0..3)
        .map(|_| {
            let code = Arc::clone(&code);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 100 {
                    assert_eq!(catch_traps(|| code.ud2()).unwrap_err().signal, libc::SIGILL);
                    n += 1;
                }
            })
        })
        .collect();
    // Fake, disjoint ranges far from the real code page.
    for i in 0..2000usize {
        let start = 0x1000 + (i % 64) * 0x100;
        let reg = register_code(start, start + 0x80, Arc::new(NoTrapSites));
        assert_eq!(reg.range(), start..start + 0x80);
        drop(reg);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in trappers {
        t.join().unwrap();
    }
}

#[test]
#[should_panic(expected = "overlaps")]
fn overlapping_registration_panics() {
    let _a = register_code(0x10_000, 0x20_000, Arc::new(NoTrapSites));
    let _b = register_code(0x18_000, 0x28_000, Arc::new(NoTrapSites));
}

#[test]
fn threads_without_std_altstack() {
    // A thread created with raw pthreads has no alternate signal stack at
    // all; catch_traps must install its own (and free it at exit).
    extern "C" fn run(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `&Code` passed to pthread_create below, which
        // joins this thread before `code` goes out of scope.
        let code = unsafe { &*(arg as *const Code) };
        let ok = catch_traps(|| code.ud2()).unwrap_err().signal == libc::SIGILL;
        ok as usize as *mut libc::c_void
    }
    let code = Code::new();
    let _reg = code.register_all();
    // SAFETY: `run` has the start-routine signature; `code` outlives the
    // thread, which is joined before this block ends.
    unsafe {
        let mut tid: libc::pthread_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_create(
                &mut tid,
                std::ptr::null(),
                run,
                &code as *const Code as *mut _
            ),
            0
        );
        let mut ret = std::ptr::null_mut();
        assert_eq!(libc::pthread_join(tid, &mut ret), 0);
        assert_eq!(ret as usize, 1);
    }
}

#[test]
fn stack_pointer_is_on_this_stack() {
    let here = 0u8;
    let sp = approximate_stack_pointer();
    let diff = (&here as *const u8 as usize).abs_diff(sp);
    assert!(
        diff < 64 * 1024,
        "sp {sp:#x} far from a local ({diff} bytes)"
    );
}

// ----- faults that must NOT be caught (checked in forked children) -----

#[test]
fn fault_outside_registered_code_is_not_caught() {
    let code = Code::new();
    let r = Reservation::new(WASM_PAGE).unwrap();
    // Warm up this thread's state so the child needs no allocation.
    init_traps().unwrap();
    let _ = catch_traps(|| {});
    // Not registered at all.
    let status = in_child(|| {
        let _ = catch_traps(|| {
            code.load(r.base());
        });
    });
    assert_eq!(status, Err(libc::SIGSEGV));
    let status = in_child(|| {
        let _ = catch_traps(|| code.ud2());
    });
    assert_eq!(status, Err(libc::SIGILL));

    // Registered, but the lookup says "not a trap site".
    let reg = register_code(code.start(), code.end(), Arc::new(NoTrapSites));
    let status = in_child(|| {
        let _ = catch_traps(|| code.ud2());
    });
    assert_eq!(status, Err(libc::SIGILL));
    drop(reg);

    // Registered and a trap site, but no catch_traps scope on the thread.
    let _reg = code.register_all();
    let status = in_child(|| code.ud2());
    assert_eq!(status, Err(libc::SIGILL));
    // Registration dropped: no longer caught.
    drop(_reg);
    let status = in_child(|| {
        let _ = catch_traps(|| code.ud2());
    });
    assert_eq!(status, Err(libc::SIGILL));
    // Sanity: the same thing in a child with the registration is caught.
    let _reg = code.register_all();
    let status = in_child(|| {
        let caught = catch_traps(|| code.ud2()).is_err();
        // SAFETY: _exit only ends the forked child; it has no preconditions.
        unsafe { libc::_exit(if caught { 42 } else { 1 }) };
    });
    assert_eq!(status, Ok(42));
}

#[test]
fn rust_stack_overflow_report_still_works() {
    // Rust's std installs a SIGSEGV handler that reports stack overflows
    // and aborts. Ours must chain to it, even inside catch_traps.
    init_traps().unwrap();
    let _ = catch_traps(|| {});
    #[inline(never)]
    fn recurse(n: u64) -> u64 {
        let buf = std::hint::black_box([n; 64]);
        if n == u64::MAX {
            return 0;
        }
        recurse(n + 1) + buf[3]
    }
    // Capture the child's stderr to check std's report.
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of the two ints pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let status = in_child(|| {
        // SAFETY: in the forked child, replaces its stderr with the pipe's
        // write end (open, made above); touches no Rust-owned memory.
        unsafe { libc::dup2(fds[1], 2) };
        let _ = catch_traps(|| {
            std::hint::black_box(recurse(0));
        });
    });
    // SAFETY: closes our copy of the pipe's write end, which nothing else
    // owns or uses, so that the read below sees end of file.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads at most `buf.len()` bytes into the live `buf`.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closes the pipe's read end, which nothing else owns or uses.
    unsafe { libc::close(fds[0]) };
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status, Err(libc::SIGABRT), "child stderr: {out}");
    assert!(out.contains("overflowed its stack"), "child stderr: {out}");
}

#[test]
fn signal_sent_with_kill_is_not_swallowed() {
    // A SIGSEGV sent by kill() (not a fault) must still terminate: there is
    // no faulting instruction to re-run, so the handler re-raises it.
    init_traps().unwrap();
    // SAFETY: in the forked child only: raise() sends a signal to itself
    // and _exit ends it; neither has memory-safety preconditions.
    let status = in_child(|| unsafe {
        libc::raise(libc::SIGILL);
        libc::_exit(3);
    });
    assert_eq!(status, Err(libc::SIGILL));
}
