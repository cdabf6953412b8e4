/*
 * wordcount: counts lines, words and bytes of a file (argv[1], or the
 * input if given, or /data/input.txt), like `wc`. Run it with the file's
 * directory mounted: faaslet run wordcount.wasm --mount DIR:/data:ro
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include "faasm/faasm.h"

FAASM_MAIN_FUNC() {
    char path[512] = "/data/input.txt";
    long in_len = faasmGetInputSize();
    if (in_len > 0 && in_len < (long)sizeof(path)) {
        faasmGetInput((unsigned char *)path, in_len);
        path[in_len] = 0;
    } else if (argc > 1) {
        snprintf(path, sizeof(path), "%s", argv[1]);
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "wordcount: cannot open %s\n", path);
        return 1;
    }
    long lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        bytes += (long)n;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c == '\n') lines++;
            if (isspace(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    fclose(f);
    char out[96];
    int len = snprintf(out, sizeof(out), "%ld %ld %ld %s\n", lines, words, bytes, path);
    faasmSetOutput((const unsigned char *)out, len);
    return 0;
}
