/* echo: its output is its input. */
#include <stdlib.h>
#include "faasm/faasm.h"

FAASM_MAIN_FUNC() {
    long len = faasmGetInputSize();
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf) return 1;
    faasmGetInput(buf, len);
    faasmSetOutput(buf, len);
    free(buf);
    return 0;
}
