/* Native builds (shim.c): the functions a binary can be entered at, by
 * name, so that a chained call can start a new process at one of them. */
#ifndef PAPER_NATIVE_H
#define PAPER_NATIVE_H
#ifndef __wasm__
struct faasm_native_entry {
    const char *name;
    int (*func)(void);
};
#endif
#endif
