/* The MLP's weight layout (floats), shared by mlp.c and gendata.c. */
#ifndef PAPER_MLP_H
#define PAPER_MLP_H
#define MLP_KEY "mlp_weights"
#define MLP_IN 784
#define MLP_H1 1024
#define MLP_H2 256
#define MLP_OUT 10
#define MLP_W1 0
#define MLP_B1 (MLP_W1 + MLP_IN * MLP_H1)
#define MLP_W2 (MLP_B1 + MLP_H1)
#define MLP_B2 (MLP_W2 + MLP_H1 * MLP_H2)
#define MLP_W3 (MLP_B2 + MLP_H2)
#define MLP_B3 (MLP_W3 + MLP_H2 * MLP_OUT)
#define MLP_FLOATS (MLP_B3 + MLP_OUT)
#define MLP_BYTES (MLP_FLOATS * 4)
#endif
