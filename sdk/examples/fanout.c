/*
 * fanout: input "N" or "N NAME". Chains N calls with inputs "0".."N-1",
 * awaits them all and outputs the sum of their outputs (read as integers).
 * Without NAME it chains its own `square` function by pointer (so the sum
 * is 0^2+...+(N-1)^2); with NAME it chains that function by name (e.g.
 * `echo`, giving 0+...+(N-1)). Returns nonzero if any call failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "faasm/faasm.h"

static long read_long_input(void) {
    char buf[32] = {0};
    long n = faasmGetInputSize();
    if (n > (long)sizeof(buf) - 1) n = sizeof(buf) - 1;
    faasmGetInput((unsigned char *)buf, n);
    return strtol(buf, NULL, 10);
}

/* The chained worker: outputs the square of its input. */
int square(void) {
    long x = read_long_input();
    char out[32];
    int len = snprintf(out, sizeof(out), "%ld", x * x);
    faasmSetOutput((const unsigned char *)out, len);
    return 0;
}

FAASM_MAIN_FUNC() {
    char in[128] = {0};
    long n = faasmGetInputSize();
    if (n > (long)sizeof(in) - 1) n = sizeof(in) - 1;
    faasmGetInput((unsigned char *)in, n);
    char *rest = NULL;
    long count = strtol(in, &rest, 10);
    while (rest && *rest == ' ') rest++;
    const char *name = (rest && *rest) ? rest : NULL;
    if (count < 0 || count > 100000) return 2;

    unsigned int *ids = calloc((size_t)count + 1, sizeof(unsigned int));
    if (!ids) return 1;
    for (long i = 0; i < count; i++) {
        char arg[32];
        int len = snprintf(arg, sizeof(arg), "%ld", i);
        ids[i] = name ? faasmChainNamed(name, (const unsigned char *)arg, len)
                      : faasmChain(square, (const unsigned char *)arg, len);
        if (ids[i] == 0) return 3;
    }
    long long sum = 0;
    int failed = 0;
    for (long i = 0; i < count; i++) {
        char *out = NULL;
        int out_len = 0;
        int rc = faasmAwaitCallOutput(ids[i], &out, &out_len);
        if (rc != 0) { failed++; continue; }
        char num[32] = {0};
        memcpy(num, out, out_len < 31 ? (size_t)out_len : 31);
        sum += strtoll(num, NULL, 10);
    }
    free(ids);
    char result[64];
    int len = snprintf(result, sizeof(result), "%lld\n", sum);
    faasmSetOutput((const unsigned char *)result, len);
    return failed ? 4 : 0;
}
