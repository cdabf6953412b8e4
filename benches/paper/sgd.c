/*
 * sgd: HOGWILD! SGD for sparse logistic regression (benches/paper).
 *
 * The training set is the state value "sgd_data" (written by gendata.c):
 *   struct sgd_header; uint32 row_ptr[rows+1]; float label[rows] (+1/-1);
 *   uint32 col[nnz]; float val[nnz]
 * The weights are the state value "sgd_weights" (float[features]).
 *
 * main (the coordinator), input "WORKERS MAX_EPOCHS TARGET_LOSS LR":
 * pulls the training set once, zeroes the weights, then each epoch chains
 * WORKERS calls of sgd_worker (by pointer), awaits them, pushes the
 * weights to the global tier and records the epoch's loss (the mean
 * logistic loss of every example, each taken just before its own update,
 * summed over the workers). It stops once that loss is at most
 * TARGET_LOSS, and outputs one line per epoch and a last line
 * "done EPOCHS LOSS". Return code 5 if the target was never reached.
 *
 * sgd_worker, input "EPOCH WORKER WORKERS LR": one shard of the rows,
 * one pass, in place on the weights, no locks.
 *   SHARE=1 (faaslet): maps the training set and the weights with
 *     __faasm_read_state_ptr and updates the weights where they are, so
 *     every worker of the host sees every other's updates as they happen.
 *   SHARE=0 (faaslet with sharing off, and the native baselines): copies
 *     its shard and the weights into private memory (__faasm_read_state,
 *     __faasm_read_state_offset), updates the copy, and writes back the
 *     weights it changed (__faasm_write_state_offset per run of changed
 *     weights; last writer wins where two workers changed the same one),
 *     as a function on a container platform has to.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include "faasm/faasm.h"
#include "sgd.h"
#include "native.h"

#ifndef SHARE
#define SHARE 1
#endif

static long input_str(char *buf, long cap) {
    long n = faasmGetInputSize();
    if (n > cap - 1) n = cap - 1;
    faasmGetInput((unsigned char *)buf, n);
    buf[n] = 0;
    return n;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct sgd_header read_header(void) {
    struct sgd_header h;
    faasmReadStateOffset(DATA_KEY, sizeof(h), 0, (unsigned char *)&h, sizeof(h));
    return h;
}

/* One pass of SGD over rows [r0, r1): returns the summed loss. */
static double pass(const uint32_t *row_ptr, const float *label, const uint32_t *col,
                   const float *val, uint32_t r0, uint32_t r1, uint32_t nz0, float *w,
                   unsigned char *dirty, float lr) {
    double loss = 0;
    for (uint32_t r = r0; r < r1; r++) {
        uint32_t a = row_ptr[r] - nz0, b = row_ptr[r + 1] - nz0;
        float dot = 0;
        for (uint32_t k = a; k < b; k++) dot += w[col[k]] * val[k];
        float y = label[r];
        float m = y * dot;
        /* log(1 + e^-m), stable both ways. */
        loss += m > 0 ? log1p(exp(-m)) : -m + log1p(exp(m));
        float g = -y / (1.0f + expf(m)); /* d loss / d dot */
        float step = lr * g;
        for (uint32_t k = a; k < b; k++) {
            w[col[k]] -= step * val[k];
            if (dirty) dirty[col[k]] = 1;
        }
    }
    return loss;
}

int sgd_worker(void) {
    char in[128];
    input_str(in, sizeof(in));
    long epoch, me, workers;
    float lr;
    if (sscanf(in, "%ld %ld %ld %f", &epoch, &me, &workers, &lr) != 4) return 2;
    struct sgd_header h = read_header();
    uint32_t r0 = (uint32_t)((uint64_t)h.rows * me / workers);
    uint32_t r1 = (uint32_t)((uint64_t)h.rows * (me + 1) / workers);
    long wlen = (long)h.features * 4;
    double loss;
#if SHARE
    const unsigned char *d = faasmReadStatePtr(DATA_KEY, (long)h.total_len);
    float *w = (float *)faasmReadStatePtr(WEIGHTS_KEY, wlen);
    const uint32_t *row_ptr = (const uint32_t *)(d + h.row_ptr_off);
    loss = pass(row_ptr, (const float *)(d + h.label_off), (const uint32_t *)(d + h.col_off),
                (const float *)(d + h.val_off), r0, r1, 0, w, NULL, lr);
#else
    /* This shard only: its row pointers, labels, columns and values. */
    uint32_t *row_ptr = malloc(((size_t)(r1 - r0) + 1) * 4);
    float *label = malloc((size_t)(r1 - r0) * 4 + 4);
    faasmReadStateOffset(DATA_KEY, (long)h.total_len, (long)(h.row_ptr_off + 4ull * r0),
                         (unsigned char *)row_ptr, (long)(r1 - r0 + 1) * 4);
    faasmReadStateOffset(DATA_KEY, (long)h.total_len, (long)(h.label_off + 4ull * r0),
                         (unsigned char *)label, (long)(r1 - r0) * 4);
    uint32_t nz0 = row_ptr[0], nz = row_ptr[r1 - r0] - nz0;
    uint32_t *col = malloc((size_t)nz * 4 + 4);
    float *val = malloc((size_t)nz * 4 + 4);
    faasmReadStateOffset(DATA_KEY, (long)h.total_len, (long)(h.col_off + 4ull * nz0),
                         (unsigned char *)col, (long)nz * 4);
    faasmReadStateOffset(DATA_KEY, (long)h.total_len, (long)(h.val_off + 4ull * nz0),
                         (unsigned char *)val, (long)nz * 4);
    float *w = malloc(wlen);
    unsigned char *dirty = calloc(h.features, 1);
    if (!row_ptr || !label || !col || !val || !w || !dirty) return 3;
    faasmReadState(WEIGHTS_KEY, (unsigned char *)w, wlen);
    loss = pass(row_ptr - r0, label - r0, col, val, r0, r1, nz0, w, dirty, lr);
    /* Write back each run of changed weights. */
    for (uint32_t f = 0; f < h.features;) {
        if (!dirty[f]) { f++; continue; }
        uint32_t e = f;
        while (e < h.features && dirty[e]) e++;
        faasmWriteStateOffset(WEIGHTS_KEY, wlen, (long)f * 4, (unsigned char *)(w + f),
                              (long)(e - f) * 4);
        f = e;
    }
#endif
    char out[64];
    int n = snprintf(out, sizeof(out), "%.9g %u", loss, r1 - r0);
    faasmSetOutput((unsigned char *)out, n);
    (void)epoch;
    return 0;
}

#ifndef __wasm__
/* The native shim finds chained functions by name in this table. */
const struct faasm_native_entry faasm_native_entries[] = {
    {"sgd_worker", sgd_worker},
    {0, 0},
};
#endif

FAASM_MAIN_FUNC() {
    (void)argc; (void)argv;
    char in[256];
    input_str(in, sizeof(in));
    long workers, max_epochs;
    float target, lr;
    if (sscanf(in, "%ld %ld %f %f", &workers, &max_epochs, &target, &lr) != 4) return 2;
    if (workers < 1 || workers > 1024 || max_epochs < 1) return 2;
    double t0 = now();
    struct sgd_header h = read_header();
    if (h.magic != SGD_MAGIC) return 6;
    /* A host that has not seen the training set fetches it once. */
    faasmPullState(DATA_KEY, (long)h.total_len);
    long wlen = (long)h.features * 4;
    unsigned char *zero = calloc(1, wlen);
    faasmWriteState(WEIGHTS_KEY, zero, wlen);
    faasmPushState(WEIGHTS_KEY);
    free(zero);
    static char log[16384];
    int at = 0;
    unsigned int *ids = calloc(workers, sizeof(unsigned int));
    double loss = INFINITY;
    long epoch;
    for (epoch = 1; epoch <= max_epochs; epoch++) {
        for (long i = 0; i < workers; i++) {
            char arg[96];
            int n = snprintf(arg, sizeof(arg), "%ld %ld %ld %.9g", epoch, i, workers, lr);
            ids[i] = faasmChain(sgd_worker, (unsigned char *)arg, n);
            if (!ids[i]) return 3;
        }
        double sum = 0, rows = 0;
        for (long i = 0; i < workers; i++) {
            char *out = NULL;
            int len = 0;
            if (faasmAwaitCallOutput(ids[i], &out, &len) != 0) return 4;
            char buf[64] = {0};
            memcpy(buf, out, len < 63 ? len : 63);
            double l;
            unsigned r;
            if (sscanf(buf, "%lf %u", &l, &r) != 2) return 4;
            sum += l;
            rows += r;
        }
        faasmPushState(WEIGHTS_KEY);
        loss = sum / rows;
        if (at < (int)sizeof(log) - 100)
            at += snprintf(log + at, sizeof(log) - at, "epoch %ld loss %.6f t %.3f\n", epoch,
                           loss, now() - t0);
        if (loss <= target) break;
    }
    if (epoch > max_epochs) epoch = max_epochs;
    at += snprintf(log + at, sizeof(log) - at, "done %ld %.6f %.3f\n", epoch, loss, now() - t0);
    faasmSetOutput((unsigned char *)log, at);
    return loss <= target ? 0 : 5;
}
