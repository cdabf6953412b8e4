/*
 * gendata: the seeded synthetic training set for benches/paper's SGD.
 * Usage: gendata OUT ROWS FEATURES SEED (the training set)
 *        gendata mlp OUT SEED (the MLP's weights for mlp.c)
 * Each row has 10..40 nonzero features, drawn with a power law (a few
 * features are frequent, most rare, as words in Reuters RCV1), values
 * positive and the row scaled to unit length. A hidden model w* (normal
 * weights) labels each row: y = sign(x.w* + noise), noise normal with a
 * tenth of the margins' spread, so the classes are separable up to a few
 * percent of flipped labels and a model exists whose loss is well below
 * log 2 (the loss of the zero model). Writes the layout of sgd.h.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sgd.h"
#include "mlp.h"

static uint64_t s;
static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(void) { return (next() >> 11) * (1.0 / 9007199254740992.0); }
static double normal(void) {
    double u = unif(), v = unif();
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

/* `gendata mlp OUT SEED`: the MLP's weights (He-style scaled normals). */
static int mlp(const char *out) {
    float *w = malloc(MLP_BYTES);
    struct { int off, n, fan_in; } parts[] = {
        {MLP_W1, MLP_IN * MLP_H1, MLP_IN}, {MLP_B1, MLP_H1, 0},
        {MLP_W2, MLP_H1 * MLP_H2, MLP_H1}, {MLP_B2, MLP_H2, 0},
        {MLP_W3, MLP_H2 * MLP_OUT, MLP_H2}, {MLP_B3, MLP_OUT, 0},
    };
    for (int p = 0; p < 6; p++)
        for (int i = 0; i < parts[p].n; i++)
            w[parts[p].off + i] = parts[p].fan_in ? normal() * sqrt(2.0 / parts[p].fan_in) : 0.01f;
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(w, 4, MLP_FLOATS, f) != MLP_FLOATS || fclose(f)) { perror(out); return 1; }
    printf("mlp: %d weights, %d bytes\n", MLP_FLOATS, MLP_BYTES);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "mlp")) {
        s = strtoull(argv[3], 0, 10);
        return mlp(argv[2]);
    }
    if (argc != 5) { fprintf(stderr, "usage: gendata OUT ROWS FEATURES SEED\n"); return 2; }
    uint32_t rows = strtoul(argv[2], 0, 10), feats = strtoul(argv[3], 0, 10);
    s = strtoull(argv[4], 0, 10);
    uint64_t seed = s;
    float *wstar = malloc(sizeof(float) * feats);
    for (uint32_t f = 0; f < feats; f++) wstar[f] = normal();
    uint32_t *row_ptr = malloc(4ull * (rows + 1));
    float *label = malloc(4ull * rows);
    size_t cap = (size_t)rows * 25 + 64;
    uint32_t *col = malloc(4 * cap);
    float *val = malloc(4 * cap);
    double *margin = malloc(8ull * rows);
    uint64_t nnz = 0;
    double msum = 0, msq = 0;
    for (uint32_t r = 0; r < rows; r++) {
        row_ptr[r] = nnz;
        int k = 10 + next() % 31;
        if (nnz + k > cap) {
            cap *= 2;
            col = realloc(col, 4 * cap);
            val = realloc(val, 4 * cap);
        }
        double norm = 0, m = 0;
        for (int i = 0; i < k; i++) {
            uint32_t f = (uint32_t)(feats * pow(unif(), 3.0));
            if (f >= feats) f = feats - 1;
            float v = 0.5 + unif();
            col[nnz + i] = f;
            val[nnz + i] = v;
            norm += (double)v * v;
        }
        norm = 1 / sqrt(norm);
        for (int i = 0; i < k; i++) {
            val[nnz + i] *= norm;
            m += val[nnz + i] * wstar[col[nnz + i]];
        }
        margin[r] = m;
        msum += m;
        msq += m * m;
        nnz += k;
    }
    row_ptr[rows] = nnz;
    double sd = sqrt(msq / rows - (msum / rows) * (msum / rows));
    double mean = msum / rows;
    for (uint32_t r = 0; r < rows; r++)
        label[r] = (margin[r] - mean + 0.1 * sd * normal()) >= 0 ? 1.0f : -1.0f;
    struct sgd_header h = {0};
    h.magic = SGD_MAGIC;
    h.rows = rows;
    h.features = feats;
    h.nnz = nnz;
    h.row_ptr_off = sizeof(h);
    h.label_off = h.row_ptr_off + 4ull * (rows + 1);
    h.col_off = h.label_off + 4ull * rows;
    h.val_off = h.col_off + 4ull * nnz;
    h.total_len = h.val_off + 4ull * nnz;
    h.seed = seed;
    FILE *f = fopen(argv[1], "wb");
    if (!f) { perror(argv[1]); return 1; }
    fwrite(&h, sizeof(h), 1, f);
    fwrite(row_ptr, 4, rows + 1, f);
    fwrite(label, 4, rows, f);
    fwrite(col, 4, nnz, f);
    fwrite(val, 4, nnz, f);
    if (fclose(f)) { perror(argv[1]); return 1; }
    printf("%u rows, %u features, %llu nonzeros, %llu bytes\n", rows, feats,
           (unsigned long long)nnz, (unsigned long long)h.total_len);
    return 0;
}
