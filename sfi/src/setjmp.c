/*
 * setjmp/longjmp helpers for faaslet-sfi's trap guard.
 *
 * Why C? A function that sets a jump buffer "returns twice". It must be
 * compiled knowing that (C compilers treat setjmp specially and keep
 * locals that are live across it in memory), and Rust has no way to
 * express this. So the frame that sets the buffer is this C function, and
 * from Rust's point of view `faaslet_sfi_call` is an ordinary function
 * that returns exactly once, with either 0 (the body returned normally) or
 * 1 (a trap handler jumped back here).
 *
 * Why `__builtin_setjmp` rather than `sigsetjmp(buf, 0)`: every call into
 * wasm goes through here, and the builtin is the compiler's own
 * non-local-goto receiver: it stores the frame pointer, the stack pointer
 * and the resume address (three words), and makes the compiler save every
 * callee-saved register this function could clobber in its prologue and
 * restore them in its epilogue, on both returns. glibc's `sigsetjmp`
 * stores eight mangled registers and calls `__sigjmp_save`: about 45
 * instructions more per call (counted with cachegrind). Neither saves the
 * signal mask (savesigs = 0 before): that would cost a `rt_sigprocmask`
 * system call per call, so the handlers are installed with SA_NODEFER and
 * never leave their signal blocked (see traps.rs).
 *
 * `__builtin_longjmp` must be called from another function than the one
 * that set the buffer (here: from the signal handler, through
 * `faaslet_sfi_longjmp`), and always makes the receiver return 1.
 */

typedef void (*faaslet_sfi_body)(void *data, void *jmpbuf);

/* The buffer: five words, as the builtins require. */
typedef void *faaslet_sfi_jmpbuf[5];

int faaslet_sfi_call(faaslet_sfi_body body, void *data) {
    faaslet_sfi_jmpbuf buf;
    if (__builtin_setjmp(buf) == 0) {
        body(data, buf);
        return 0;
    }
    return 1;
}

void faaslet_sfi_longjmp(void *buf) {
    __builtin_longjmp((void **)buf, 1);
}

/*
 * The engine's path into wasm, without a Rust closure in between: set the
 * jump buffer, make it and `regions` the thread's active ones (through the
 * pointers to the thread-locals the signal handlers read), call the array
 * trampoline `f(a, b, c, d)`, and put the previous ones back. After a jump
 * back (return 1) the caller restores them: locals of this frame are not
 * to be trusted after `__builtin_longjmp`.
 */
typedef void (*faaslet_sfi_jit_entry)(void *a, void *b, void *c, void *d);

int faaslet_sfi_call_jit(void **active_jmpbuf, const void **active_regions,
                         const void *regions, faaslet_sfi_jit_entry f,
                         void *a, void *b, void *c, void *d) {
    faaslet_sfi_jmpbuf buf;
    void *prev = *active_jmpbuf;
    const void *prev_regions = *active_regions;
    if (__builtin_setjmp(buf) == 0) {
        *active_regions = regions;
        *active_jmpbuf = buf;
        f(a, b, c, d);
        *active_jmpbuf = prev;
        *active_regions = prev_regions;
        return 0;
    }
    return 1;
}
