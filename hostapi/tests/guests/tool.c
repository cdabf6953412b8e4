/* A small multi-tool WASI program for faaslet's WASI tests: cat, wc, ls,
 * cp, fs operations, environment, clocks, and escape attempts. Built with
 * `clang --target=wasm32-wasi -O2 tool.c -o tool.wasm`. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int cat(FILE *f) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    return ferror(f) ? 1 : 0;
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void try_open(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd >= 0) { printf("open %s: ok\n", path); close(fd); }
    else printf("open %s: %s\n", path, strerror(errno));
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: tool CMD ...\n"); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "cat")) {
        if (argc == 2) return cat(stdin);
        for (int i = 2; i < argc; i++) {
            FILE *f = fopen(argv[i], "r");
            if (!f) { fprintf(stderr, "cat: %s: %s\n", argv[i], strerror(errno)); return 1; }
            cat(f); fclose(f);
        }
        return 0;
    }
    if (!strcmp(cmd, "wc")) {
        FILE *f = argc > 2 ? fopen(argv[2], "r") : stdin;
        if (!f) { perror("wc"); return 1; }
        long lines = 0, words = 0, bytes = 0; int c, inword = 0;
        while ((c = fgetc(f)) != EOF) {
            bytes++;
            if (c == '\n') lines++;
            if (c == ' ' || c == '\n' || c == '\t') inword = 0;
            else if (!inword) { inword = 1; words++; }
        }
        printf("%ld %ld %ld\n", lines, words, bytes);
        return 0;
    }
    if (!strcmp(cmd, "ls")) {
        DIR *d = opendir(argv[2]);
        if (!d) { printf("ls: %s\n", strerror(errno)); return 1; }
        char *names[256]; int n = 0; struct dirent *e;
        while ((e = readdir(d)) && n < 256) names[n++] = strdup(e->d_name);
        closedir(d);
        qsort(names, n, sizeof *names, cmp);
        for (int i = 0; i < n; i++) {
            char p[1024]; struct stat st;
            snprintf(p, sizeof p, "%s/%s", argv[2], names[i]);
            if (lstat(p, &st)) { printf("%s ?\n", names[i]); continue; }
            printf("%s %c %lld\n", names[i], S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'f',
                   S_ISREG(st.st_mode) ? (long long)st.st_size : 0LL);
        }
        return 0;
    }
    if (!strcmp(cmd, "cp")) {
        FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
        if (!in || !out) { printf("cp: %s\n", strerror(errno)); return 1; }
        char buf[777]; size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
        fclose(in); fclose(out);
        return 0;
    }
    if (!strcmp(cmd, "fsops")) {
        /* argv[2] is a writable directory. */
        char a[512], b[512], c[512], l[512], t[64];
        snprintf(a, sizeof a, "%s/sub", argv[2]);
        snprintf(b, sizeof b, "%s/sub/f.txt", argv[2]);
        snprintf(c, sizeof c, "%s/sub/g.txt", argv[2]);
        snprintf(l, sizeof l, "%s/sub/link", argv[2]);
        printf("mkdir %d\n", mkdir(a, 0755));
        printf("mkdir again %s\n", mkdir(a, 0755) ? strerror(errno) : "ok");
        int fd = open(b, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        printf("write %zd\n", write(fd, "hello world", 11));
        printf("pwrite %zd\n", pwrite(fd, "W", 1, 6));
        printf("lseek %lld\n", (long long)lseek(fd, 0, SEEK_END));
        printf("ftruncate %d\n", ftruncate(fd, 5));
        printf("fsync %d\n", fsync(fd));
        close(fd);
        fd = open(b, O_RDONLY);
        char buf[32] = {0};
        printf("pread %zd %s\n", pread(fd, buf, 31, 1), buf);
        printf("write to rdonly %s\n", write(fd, "x", 1) < 0 ? strerror(errno) : "ok");
        close(fd);
        fd = open(b, O_WRONLY | O_APPEND);
        write(fd, "++", 2); close(fd);
        FILE *f = fopen(b, "r"); fgets(buf, sizeof buf, f); fclose(f);
        printf("appended %s\n", buf);
        printf("rename %d\n", rename(b, c));
        printf("stat old %s\n", access(b, F_OK) ? strerror(errno) : "exists");
        printf("symlink %d\n", symlink("g.txt", l));
        ssize_t n = readlink(l, t, sizeof t - 1); t[n > 0 ? n : 0] = 0;
        printf("readlink %zd %s\n", n, t);
        f = fopen(l, "r"); fgets(buf, sizeof buf, f); fclose(f);
        printf("via link %s\n", buf);
        struct stat st; lstat(l, &st);
        printf("lstat link %s\n", S_ISLNK(st.st_mode) ? "symlink" : "other");
        printf("rmdir nonempty %s\n", rmdir(a) ? strerror(errno) : "ok");
        printf("unlink %d %d\n", unlink(l), unlink(c));
        printf("rmdir %d\n", rmdir(a));
        return 0;
    }
    if (!strcmp(cmd, "escape")) {
        /* argv[2..] are paths that must not open. */
        for (int i = 2; i < argc; i++) try_open(argv[i], O_RDONLY);
        return 0;
    }
    if (!strcmp(cmd, "rofs")) {
        char p[512];
        snprintf(p, sizeof p, "%s/new.txt", argv[2]);
        try_open(p, O_CREAT | O_WRONLY);
        snprintf(p, sizeof p, "%s/%s", argv[2], argv[3]);
        try_open(p, O_WRONLY);
        try_open(p, O_RDONLY);
        printf("unlink %s\n", unlink(p) ? strerror(errno) : "ok");
        snprintf(p, sizeof p, "%s/dir", argv[2]);
        printf("mkdir %s\n", mkdir(p, 0755) ? strerror(errno) : "ok");
        return 0;
    }
    if (!strcmp(cmd, "env")) {
        printf("argc %d\n", argc);
        for (int i = 0; i < argc; i++) printf("argv[%d] %s\n", i, argv[i]);
        printf("HOME=%s\n", getenv("HOME") ? getenv("HOME") : "(null)");
        printf("MISSING=%s\n", getenv("MISSING") ? getenv("MISSING") : "(null)");
        struct timespec t0, t1, rt;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct timespec d = {0, 20 * 1000 * 1000};
        nanosleep(&d, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        printf("slept>=20ms %d\n", ms >= 20);
        clock_gettime(CLOCK_REALTIME, &rt);
        printf("realtime>2020 %d\n", rt.tv_sec > 1577836800);
        unsigned char r[64]; arc4random_buf(r, sizeof r);
        int nz = 0; for (int i = 0; i < 64; i++) nz += r[i] != 0;
        printf("random nonzero %d\n", nz > 32);
        exit(atoi(argc > 2 ? argv[2] : "0"));
    }
    fprintf(stderr, "unknown command %s\n", cmd);
    return 2;
}
