/*
 * qjs-faaslet: the WASI command that runs JavaScript functions.
 *
 *     qjs-faaslet SCRIPT
 *
 * Evaluates SCRIPT (the source text itself, as `python -c` takes it) as a
 * global script in a fresh QuickJS context, runs the jobs its promises
 * queued, and exits. The script sees these globals besides the language's
 * own:
 *
 *   readInput()        the whole of standard input, as a string (UTF-8);
 *                      a second call returns "" (the input is consumed).
 *                      The driver reads standard input before it runs
 *                      the script (see "Where faaslet captures it").
 *   print(...a)        writes the arguments, separated by spaces, and a
 *                      newline to standard output
 *   console.log(...a)  the same (console.info too)
 *   console.error(...a) the same to standard error (console.warn too)
 *   writeOutput(s)     writes the string s to standard output as it is
 *   exit(code)         flushes the output and exits with code (0..255)
 *   scriptArgs         the arguments after SCRIPT, as strings
 *
 * Math.random is the driver's: seeded from the system's entropy when the
 * program starts and again right after standard input has been read,
 * so every call resumed from a snapshot taken at that read draws its own
 * numbers (QuickJS's own generator is seeded once, from the clock, when
 * the context is made, which a snapshot would fix for every call).
 *
 * An uncaught exception (thrown by the script or by a job, or a promise
 * rejected with no handler by the end) writes "Uncaught " and the value,
 * then its stack if it has one, to standard error and exits with 1. A
 * usage error (no SCRIPT) or a runtime that cannot start exits with 2.
 *
 * Where faaslet captures it. The driver starts the runtime, compiles the
 * script (a syntax error is reported then, and the program exits before
 * reading anything), then reads the whole of standard input (file
 * descriptor 0, read(2), WASI's fd_read) and only then runs the script;
 * readInput() hands out what was read. Faaslet captures the program at
 * that first read and resumes every call there with its own input: the
 * runtime is started and the script compiled, and the script's top-level
 * code runs in each call. A fresh run behaves the same, since the script
 * cannot tell when its input was read.
 *
 * Reading in main, rather than inside readInput() under the interpreter,
 * keeps the interpreter out of the capture's path: faaslet transforms the
 * program with binaryen's asyncify to unwind the stack at the read, and
 * asyncify instruments every function that may be on that path. With the
 * read under readInput() that was QuickJS's interpreter loop and nearly
 * everything it calls (indirect calls may reach anything), which made
 * CPU-bound JavaScript run about 3.5 times slower. build.sh adds a custom
 * section, `faaslet.asyncify-onlylist`, naming the functions on main's
 * path to the read (wasi-libc's start-up, main, read_stdin below and
 * wasi-libc's read(2)), and faaslet instruments those alone.
 *
 * Built by build.sh beside this file, with QuickJS-NG's sources (fetched
 * from PyPI at build time, not kept here).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quickjs.h"

/* The most of the shadow stack (in linear memory; build.sh gives the
 * program 1 MiB) that JavaScript recursion may use before QuickJS throws
 * a RangeError. Each JavaScript call also takes native stack, which
 * QuickJS cannot see: 192 KiB of shadow stack (about 580 levels of a
 * plain recursive function) stays within faaslet's native stack for the
 * common shapes of recursion; deeper native use traps ("call stack
 * exhausted"), which is a failed call too. */
#ifndef QJS_FAASLET_JS_STACK
#define QJS_FAASLET_JS_STACK (192 * 1024)
#endif

/* Standard input, read by main before the script runs (read_stdin);
 * readInput() hands it out once, and "" after that. */
static int input_consumed;
static char *input_buf;
static size_t input_len;
/* Why reading failed (0: it did not): errno of the read, or ENOMEM. The
 * error is thrown where the script asks for its input, as it would have
 * been by a read inside readInput(). */
static int input_errno;


/* Math.random's state (xorshift64*, as QuickJS's own), never zero. */
static uint64_t rng_state = 1;

/* Seeds Math.random from the system's entropy (WASI random_get). */
static void seed_random(void)
{
    uint64_t s = 0;
    if (getentropy(&s, sizeof s) != 0 || s == 0) {
        s = rng_state * 0x9E3779B97F4A7C15ull + 1;
    }
    rng_state = s ? s : 1;
}

static JSValue js_random(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)ctx;
    (void)this_val;
    (void)argc;
    (void)argv;
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    /* 53 random bits: a double in [0, 1). */
    return JS_NewFloat64(ctx, (double)(v >> 11) * 0x1.0p-53);
}

/* The first promise rejected with no handler, if it is still unhandled at
 * the end (JS_UNDEFINED otherwise; `have_rejection` says whether set). */
static JSValue rejection;
static int have_rejection;

/* Writes v as a string (or "[unprintable]") to f. */
static void write_value(JSContext *ctx, FILE *f, JSValueConst v)
{
    size_t len;
    const char *s = JS_ToCStringLen(ctx, &len, v);
    if (s) {
        fwrite(s, 1, len, f);
        JS_FreeCString(ctx, s);
    } else {
        JSValue e = JS_GetException(ctx);
        JS_FreeValue(ctx, e);
        fputs("[unprintable]", f);
    }
}

/* Reports an uncaught value the way qjs does: "Uncaught VALUE", then the
 * stack of an Error. */
static void report(JSContext *ctx, JSValueConst v, const char *what)
{
    fflush(stdout);
    fputs(what, stderr);
    write_value(ctx, stderr, v);
    fputc('\n', stderr);
    if (JS_IsError(v)) {
        JSValue stack = JS_GetPropertyStr(ctx, v, "stack");
        if (JS_IsString(stack)) {
            write_value(ctx, stderr, stack);
        }
        JS_FreeValue(ctx, stack);
        JS_FreeValue(ctx, JS_GetException(ctx));
    }
    fflush(stderr);
}

/* Reports the pending exception and exits with 1. */
static void die_uncaught(JSContext *ctx)
{
    JSValue e = JS_GetException(ctx);
    report(ctx, e, "Uncaught ");
    exit(1);
}

static JSValue write_args(JSContext *ctx, FILE *f, int argc, JSValueConst *argv)
{
    for (int i = 0; i < argc; i++) {
        if (i > 0) {
            fputc(' ', f);
        }
        size_t len;
        const char *s = JS_ToCStringLen(ctx, &len, argv[i]);
        if (!s) {
            return JS_EXCEPTION;
        }
        fwrite(s, 1, len, f);
        JS_FreeCString(ctx, s);
    }
    fputc('\n', f);
    return JS_UNDEFINED;
}

static JSValue js_print(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    return write_args(ctx, stdout, argc, argv);
}

static JSValue js_print_err(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    return write_args(ctx, stderr, argc, argv);
}

static JSValue js_write_output(JSContext *ctx, JSValueConst this_val, int argc,
                               JSValueConst *argv)
{
    (void)this_val;
    if (argc < 1) {
        return JS_ThrowTypeError(ctx, "writeOutput: a string is required");
    }
    size_t len;
    const char *s = JS_ToCStringLen(ctx, &len, argv[0]);
    if (!s) {
        return JS_EXCEPTION;
    }
    fwrite(s, 1, len, stdout);
    JS_FreeCString(ctx, s);
    return JS_UNDEFINED;
}

static JSValue js_read_input(JSContext *ctx, JSValueConst this_val, int argc,
                             JSValueConst *argv)
{
    (void)this_val;
    (void)argc;
    (void)argv;
    if (input_consumed) {
        return JS_NewStringLen(ctx, "", 0);
    }
    input_consumed = 1;
    if (input_errno == ENOMEM) {
        return JS_ThrowOutOfMemory(ctx);
    }
    if (input_errno != 0) {
        return JS_ThrowInternalError(ctx, "readInput: %s", strerror(input_errno));
    }
    JSValue s = JS_NewStringLen(ctx, input_buf ? input_buf : "", input_len);
    free(input_buf);
    input_buf = NULL;
    return s;
}

/* Reads the whole of standard input into input_buf/input_len, or sets
 * input_errno. Not inlined: faaslet's asyncify transform instruments it by
 * name (build.sh lists it in faaslet.asyncify-onlylist). */
__attribute__((noinline)) static void read_stdin(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        input_errno = ENOMEM;
        return;
    }
    for (;;) {
        if (len == cap) {
            char *more = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!more) {
                free(buf);
                input_errno = ENOMEM;
                return;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            input_errno = errno;
            free(buf);
            return;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    input_buf = buf;
    input_len = len;
}

static JSValue js_exit(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    int code = 0;
    if (argc > 0 && JS_ToInt32(ctx, &code, argv[0]) < 0) {
        return JS_EXCEPTION;
    }
    fflush(stdout);
    fflush(stderr);
    exit(code & 0xff);
}

static void track_rejection(JSContext *ctx, JSValueConst promise, JSValueConst reason,
                            bool is_handled, void *opaque)
{
    (void)promise;
    (void)opaque;
    if (!is_handled && !have_rejection) {
        rejection = JS_DupValue(ctx, reason);
        have_rejection = 1;
    } else if (is_handled && have_rejection) {
        /* A handler came later: that rejection is no longer uncaught (only
         * the first is tracked, so this forgets it). */
        JS_FreeValue(ctx, rejection);
        rejection = JS_UNDEFINED;
        have_rejection = 0;
    }
}

static int set_func(JSContext *ctx, JSValueConst obj, const char *name, JSCFunction *f, int n)
{
    return JS_SetPropertyStr(ctx, obj, name, JS_NewCFunction(ctx, f, name, n));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: qjs-faaslet SCRIPT [ARG...]\n", stderr);
        return 2;
    }
    const char *script = argv[1];
    JSRuntime *rt = JS_NewRuntime();
    if (!rt) {
        fputs("qjs-faaslet: cannot allocate the JavaScript runtime\n", stderr);
        return 2;
    }
    JS_SetMaxStackSize(rt, QJS_FAASLET_JS_STACK);
    JS_SetHostPromiseRejectionTracker(rt, track_rejection, NULL);
    JSContext *ctx = JS_NewContext(rt);
    if (!ctx) {
        fputs("qjs-faaslet: cannot allocate the JavaScript context\n", stderr);
        return 2;
    }
    rejection = JS_UNDEFINED;

    seed_random();
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue math = JS_GetPropertyStr(ctx, global, "Math");
    JSValue console = JS_NewObject(ctx);
    JSValue args = JS_NewArray(ctx);
    for (int i = 2; i < argc; i++) {
        JS_SetPropertyUint32(ctx, args, (uint32_t)(i - 2), JS_NewString(ctx, argv[i]));
    }
    if (set_func(ctx, global, "print", js_print, 1) < 0 ||
        set_func(ctx, global, "readInput", js_read_input, 0) < 0 ||
        set_func(ctx, global, "writeOutput", js_write_output, 1) < 0 ||
        set_func(ctx, global, "exit", js_exit, 1) < 0 ||
        set_func(ctx, console, "log", js_print, 1) < 0 ||
        set_func(ctx, console, "info", js_print, 1) < 0 ||
        set_func(ctx, console, "error", js_print_err, 1) < 0 ||
        set_func(ctx, console, "warn", js_print_err, 1) < 0 ||
        JS_SetPropertyStr(ctx, global, "console", console) < 0 ||
        JS_SetPropertyStr(ctx, global, "scriptArgs", args) < 0 ||
        set_func(ctx, math, "random", js_random, 0) < 0) {
        die_uncaught(ctx);
    }
    JS_FreeValue(ctx, math);
    JS_FreeValue(ctx, global);

    /* Compiled before the read, so that a capture there holds the
     * bytecode; run after it. */
    JSValue code = JS_Eval(ctx, script, strlen(script), "<script>",
                           JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(code)) {
        die_uncaught(ctx);
    }
    read_stdin();
    /* A call resumed at the read above must not repeat the random numbers
     * of the snapshot's run: seed again now. */
    seed_random();
    JSValue r = JS_EvalFunction(ctx, code);
    if (JS_IsException(r)) {
        die_uncaught(ctx);
    }
    JS_FreeValue(ctx, r);
    for (;;) {
        JSContext *job_ctx;
        int done = JS_ExecutePendingJob(rt, &job_ctx);
        if (done == 0) {
            break;
        }
        if (done < 0) {
            die_uncaught(job_ctx);
        }
    }
    if (have_rejection) {
        report(ctx, rejection, "Uncaught (in promise) ");
        exit(1);
    }
    /* No teardown of the runtime: nothing outside can observe it, and the
     * process ends here. */
    fflush(stdout);
    fflush(stderr);
    exit(0);
}
