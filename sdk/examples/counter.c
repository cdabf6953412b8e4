/*
 * counter: increments the 4-byte state value "counter" under its write
 * lock, pushes it and outputs the new count. Run concurrently, every
 * caller sees a distinct count.
 */
#include <stdint.h>
#include <stdio.h>
#include "faasm/faasm.h"

FAASM_MAIN_FUNC() {
    const char *key = "counter";
    uint32_t value = 0;
    faasmLockStateWrite(key);
    faasmPullState(key, sizeof(value));
    faasmReadState(key, (unsigned char *)&value, sizeof(value));
    value += 1;
    faasmWriteState(key, (const unsigned char *)&value, sizeof(value));
    faasmPushState(key);
    faasmUnlockStateWrite(key);
    char out[16];
    int len = snprintf(out, sizeof(out), "%u", value);
    faasmSetOutput((const unsigned char *)out, len);
    return 0;
}
