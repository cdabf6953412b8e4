/* hello: writes a greeting as its output. */
#include <string.h>
#include "faasm/faasm.h"

FAASM_MAIN_FUNC() {
    const char *msg = "Hello from a Faaslet!\n";
    faasmSetOutput((const unsigned char *)msg, (long)strlen(msg));
    return 0;
}
