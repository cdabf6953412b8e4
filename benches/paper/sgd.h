/* The training set's layout, shared by sgd.c, gendata.c and sgd_eval.c. */
#ifndef PAPER_SGD_H
#define PAPER_SGD_H
#include <stdint.h>

#define SGD_MAGIC 0x31444753u /* "SGD1" */
#define DATA_KEY "sgd_data"
#define WEIGHTS_KEY "sgd_weights"

struct sgd_header {
    uint32_t magic;
    uint32_t rows;
    uint32_t features;
    uint32_t nnz;
    uint64_t total_len;   /* bytes of the whole value, header included */
    uint64_t row_ptr_off; /* uint32[rows + 1] */
    uint64_t label_off;   /* float[rows] */
    uint64_t col_off;     /* uint32[nnz] */
    uint64_t val_off;     /* float[nnz] */
    uint64_t seed;
};

#endif
