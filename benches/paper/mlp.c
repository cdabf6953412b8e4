/*
 * mlp: inference with a small multi-layer perceptron (benches/paper).
 * 784 inputs -> 1024 (ReLU) -> 256 (ReLU) -> 10 classes; the weights
 * (4.2 MB of floats, written by `gendata mlp`) are the state value
 * "mlp_weights". Input: a decimal seed; the function synthesises a
 * 784-pixel input from it, classifies it and outputs "CLASS SCORE".
 *   SHARE=1 (faaslet): maps the weights with __faasm_read_state_ptr (every
 *     Faaslet of the host reads the same pages; nothing is copied).
 *   SHARE=0 (faaslet with sharing off, and the native baselines): copies
 *     the weights in with __faasm_read_state, once per process (a warm
 *     container keeps them; a fresh instance or container copies them).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "faasm/faasm.h"
#include "mlp.h"
#include "native.h"

#ifndef SHARE
#define SHARE 1
#endif

static void layer(const float *w, const float *b, const float *in, int n_in, float *out, int n_out,
                  int relu) {
    for (int o = 0; o < n_out; o++) out[o] = b[o];
    for (int i = 0; i < n_in; i++) {
        float x = in[i];
        if (x == 0) continue;
        const float *row = w + (size_t)i * n_out;
        for (int o = 0; o < n_out; o++) out[o] += x * row[o];
    }
    if (relu)
        for (int o = 0; o < n_out; o++) out[o] = out[o] > 0 ? out[o] : 0;
}

FAASM_MAIN_FUNC() {
    (void)argc; (void)argv;
    char in[32] = {0};
    long n = faasmGetInputSize();
    if (n > 31) n = 31;
    faasmGetInput((unsigned char *)in, n);
    uint64_t s = strtoull(in, NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
#if SHARE
    const float *w = (const float *)faasmReadStatePtr(MLP_KEY, MLP_BYTES);
#else
    static float *w;
    if (!w) {
        w = malloc(MLP_BYTES);
        if (!w) return 3;
        faasmReadState(MLP_KEY, (unsigned char *)w, MLP_BYTES);
    }
#endif
    static float x[MLP_IN], h1[MLP_H1], h2[MLP_H2], y[MLP_OUT];
    for (int i = 0; i < MLP_IN; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = (s % 4 == 0) ? (float)(s >> 40) / (float)(1 << 24) : 0.0f; /* a sparse "image" */
    }
    layer(w + MLP_W1, w + MLP_B1, x, MLP_IN, h1, MLP_H1, 1);
    layer(w + MLP_W2, w + MLP_B2, h1, MLP_H1, h2, MLP_H2, 1);
    layer(w + MLP_W3, w + MLP_B3, h2, MLP_H2, y, MLP_OUT, 0);
    int best = 0;
    for (int o = 1; o < MLP_OUT; o++) if (y[o] > y[best]) best = o;
    char out[64];
    int len = snprintf(out, sizeof(out), "%d %.4f", best, y[best]);
    faasmSetOutput((unsigned char *)out, len);
    return 0;
}

#ifndef __wasm__
const struct faasm_native_entry faasm_native_entries[] = {{0, 0}};
#endif
