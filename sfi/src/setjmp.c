/*
 * setjmp/longjmp helpers for faaslet-sfi's trap guard.
 *
 * Why C? `sigsetjmp` "returns twice". A function that calls it must be
 * compiled knowing that (C compilers mark it `returns_twice` and keep locals
 * that are live across it in memory), and Rust has no way to express this:
 * calling `sigsetjmp` directly from Rust is undefined behaviour. So the
 * frame that calls `sigsetjmp` is this C function, and from Rust's point of
 * view `faaslet_sfi_call` is an ordinary function that returns exactly once,
 * with either 0 (the body returned normally) or 1 (a trap handler jumped
 * back here).
 *
 * savesigs = 0: we do not save/restore the signal mask. Saving it costs a
 * `rt_sigprocmask` system call on every call into JIT code. The price is
 * that the signal handler must not leave its own signal blocked when it
 * jumps out, which is why the handlers are installed with SA_NODEFER (see
 * traps.rs).
 */
#include <setjmp.h>

typedef void (*faaslet_sfi_body)(void *data, void *jmpbuf);

int faaslet_sfi_call(faaslet_sfi_body body, void *data) {
    sigjmp_buf buf;
    if (sigsetjmp(buf, 0) == 0) {
        body(data, &buf);
        return 0;
    }
    return 1;
}

void faaslet_sfi_longjmp(void *buf) {
    siglongjmp(*(sigjmp_buf *)buf, 1);
}
