/*
 * shim.c: the Faasm calls benches/paper's functions use, for a native
 * process (the container-per-call and process-per-call baselines). There
 * is no local tier: every state call is a command to the same Redis the
 * faaslet worker uses, on the same keys ("faaslet:v:USER/KEY"), with the
 * commands faaslet's Redis tier sends: GET / GETRANGE to read, SET to
 * replace, SETRANGE (pipelined, sent at the next push or at exit) to
 * write a range. A value read through __faasm_read_state_ptr is a private
 * copy (what a container holds); a push of it is a SET of the whole copy.
 *
 * Chained calls (__faasm_chain_ptr) start a new process running this
 * binary at the named entry (the function's faasm_native_entries table),
 * by the launcher in PAPER_LAUNCH:
 *   runc     a fresh OCI container per call: a bundle directory with its own
 *            config.json (from PAPER_RUNC_TEMPLATE, over the read-only
 *            root file system PAPER_ROOTFS), `runc run` in the foreground;
 *   unshare  a process in fresh pid, mount, uts and ipc namespaces;
 *   fork     a plain child process (debugging).
 * The child's output comes back on its standard output; its exit status
 * is the return code.
 *
 * Usage: FN [ENTRY [INPUT]]   one call (ENTRY "main" or "-": the function's main)
 *        FN --serve [ENTRY]   calls on stdin until EOF: each request a
 *                             little-endian u32 length and the input; each
 *                             reply an i32 return code, a u32 length and
 *                             the output (a warm process or container)
 * Environment: PAPER_REDIS (HOST:PORT, default 127.0.0.1:6379),
 * PAPER_USER (default "demo").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faasm/faasm.h"
#include "native.h"

extern const struct faasm_native_entry faasm_native_entries[];
int faasm_main(int argc, char *argv[]);

static void die(const char *what) {
    fprintf(stderr, "shim: %s: %s\n", what, strerror(errno));
    exit(70);
}

/* ---- a minimal RESP client ---- */

static int rfd = -1;
static char *wbuf;
static size_t wlen, wcap;
static long pending; /* pipelined replies not read yet */

static void rconnect(void) {
    if (rfd >= 0) return;
    const char *addr = getenv("PAPER_REDIS");
    if (!addr) addr = "127.0.0.1:6379";
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon - addr >= (long)sizeof(host)) { errno = EINVAL; die("PAPER_REDIS"); }
    memcpy(host, addr, colon - addr);
    host[colon - addr] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    rfd = socket(AF_INET, SOCK_STREAM, 0);
    if (rfd < 0) die("socket");
    if (connect(rfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect to redis");
    int one = 1;
    setsockopt(rfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void put(const void *p, size_t n) {
    if (wlen + n > wcap) {
        wcap = (wlen + n) * 2 + 4096;
        wbuf = realloc(wbuf, wcap);
        if (!wbuf) die("realloc");
    }
    memcpy(wbuf + wlen, p, n);
    wlen += n;
}

/* Queues one command of argc bulk strings. */
static void cmd(int argc, const char **argv, const size_t *lens) {
    char h[32];
    put(h, snprintf(h, sizeof(h), "*%d\r\n", argc));
    for (int i = 0; i < argc; i++) {
        put(h, snprintf(h, sizeof(h), "$%zu\r\n", lens[i]));
        put(argv[i], lens[i]);
        put("\r\n", 2);
    }
    pending++;
}

static void flush_out(void) {
    rconnect();
    size_t at = 0;
    while (at < wlen) {
        ssize_t n = write(rfd, wbuf + at, wlen - at);
        if (n < 0) { if (errno == EINTR) continue; die("write to redis"); }
        at += n;
    }
    wlen = 0;
}

static char rb[1 << 16];
static size_t rpos, rend;

static int rbyte(void) {
    if (rpos == rend) {
        ssize_t n;
        do n = read(rfd, rb, sizeof(rb)); while (n < 0 && errno == EINTR);
        if (n <= 0) { errno = n ? errno : ECONNRESET; die("read from redis"); }
        rpos = 0;
        rend = n;
    }
    return (unsigned char)rb[rpos++];
}

static long rline(char *buf, size_t cap) {
    size_t n = 0;
    for (;;) {
        int c = rbyte();
        if (c == '\r') { rbyte(); break; }
        if (n + 1 < cap) buf[n++] = c;
    }
    buf[n] = 0;
    return n;
}

/* Reads one reply. A bulk string is copied to dst (up to cap bytes; the
 * rest is read and dropped) and its length returned; nil is -1; other
 * replies return 0 (an error reply ends the process). */
static long reply(void *dst, size_t cap) {
    char line[512];
    int t = rbyte();
    rline(line, sizeof(line));
    pending--;
    if (t == '-') { fprintf(stderr, "shim: redis: %s\n", line); exit(71); }
    if (t != '$') return 0;
    long len = atol(line);
    if (len < 0) return -1;
    for (long i = 0; i < len;) {
        if (rpos == rend) { rbyte(); rpos--; }
        size_t chunk = rend - rpos;
        if ((long)chunk > len - i) chunk = len - i;
        if (dst && (size_t)i < cap) {
            size_t c = chunk;
            if (i + c > cap) c = cap - i;
            memcpy((char *)dst + i, rb + rpos, c);
        }
        rpos += chunk;
        i += chunk;
    }
    rbyte(); rbyte();
    return len;
}

static void drain(void) {
    if (wlen) flush_out();
    while (pending > 0) reply(NULL, 0);
}

static const char *rkey(const char *key, size_t *len) {
    static char k[512];
    const char *user = getenv("PAPER_USER");
    if (!user) user = "demo";
    *len = snprintf(k, sizeof(k), "faaslet:v:%s/%s", user, key);
    return k;
}

/* ---- calls ---- */

static unsigned char *input;
static long input_len;
static unsigned char *output;
static long output_len;

long __faasm_read_input(unsigned char *buf, long len) {
    if (len > 0) memcpy(buf, input, len < input_len ? len : input_len);
    return input_len;
}
void __faasm_write_output(const unsigned char *out, long len) {
    free(output);
    output = malloc(len + 1);
    memcpy(output, out, len);
    output_len = len;
}

/* Values read through __faasm_read_state_ptr: private copies. */
struct copy { char key[128]; unsigned char *data; long len; };
static struct copy copies[16];

static struct copy *copy_of(const char *key) {
    for (int i = 0; i < 16; i++)
        if (copies[i].data && !strcmp(copies[i].key, key)) return &copies[i];
    return NULL;
}

static long get_range(const char *key, long off, unsigned char *buf, long len) {
    size_t kl;
    const char *k = rkey(key, &kl);
    char a[32], b[32];
    const char *argv[] = {"GETRANGE", k, a, b};
    size_t lens[] = {8, kl, (size_t)snprintf(a, 32, "%ld", off), (size_t)snprintf(b, 32, "%ld", off + len - 1)};
    drain();
    cmd(4, argv, lens);
    flush_out();
    long n = reply(buf, len);
    if (n < len) memset(buf + (n < 0 ? 0 : n), 0, len - (n < 0 ? 0 : n));
    return n;
}

long __faasm_read_state(const char *key, unsigned char *buf, long len) {
    size_t kl;
    const char *k = rkey(key, &kl);
    const char *argv[] = {"GET", k};
    size_t lens[] = {3, kl};
    drain();
    cmd(2, argv, lens);
    flush_out();
    long n = reply(buf, len > 0 ? len : 0);
    if (n < 0) n = 0;
    if (len > n) memset(buf + n, 0, len - n);
    return n;
}

unsigned char *__faasm_read_state_ptr(const char *key, long total) {
    struct copy *c = copy_of(key);
    if (c && c->len >= total) return c->data;
    if (!c) {
        for (int i = 0; i < 16 && !c; i++) if (!copies[i].data) c = &copies[i];
        if (!c) { errno = ENOSPC; die("too many mapped values"); }
        snprintf(c->key, sizeof(c->key), "%s", key);
    }
    free(c->data);
    c->data = malloc(total);
    c->len = total;
    __faasm_read_state(key, c->data, total);
    return c->data;
}

unsigned char *__faasm_read_state_offset_ptr(const char *key, long total, long off, long len) {
    (void)len;
    return __faasm_read_state_ptr(key, total) + off;
}

void __faasm_read_state_offset(const char *key, long total, long off, unsigned char *buf, long len) {
    (void)total;
    if (len > 0) get_range(key, off, buf, len);
}

void __faasm_write_state(const char *key, const unsigned char *data, long len) {
    size_t kl;
    const char *k = rkey(key, &kl);
    const char *argv[] = {"SET", k, (const char *)data};
    size_t lens[] = {3, kl, (size_t)len};
    cmd(3, argv, lens);
    drain();
    struct copy *c = copy_of(key);
    if (c) memcpy(c->data, data, len < c->len ? len : c->len);
}

void __faasm_write_state_offset(const char *key, long total, long off, const unsigned char *data,
                                long len) {
    (void)total;
    size_t kl;
    const char *k = rkey(key, &kl);
    char o[32];
    const char *argv[] = {"SETRANGE", k, o, (const char *)data};
    size_t lens[] = {8, kl, (size_t)snprintf(o, 32, "%ld", off), (size_t)len};
    cmd(4, argv, lens); /* sent at the next push, read or exit */
    if (wlen > (1 << 20)) flush_out(); /* keep the buffer bounded */
    struct copy *c = copy_of(key);
    if (c && off + len <= c->len) memcpy(c->data + off, data, len);
}

void __faasm_push_state(const char *key) {
    struct copy *c = copy_of(key);
    if (c) {
        size_t kl;
        const char *k = rkey(key, &kl);
        const char *argv[] = {"SET", k, (const char *)c->data};
        size_t lens[] = {3, kl, (size_t)c->len};
        cmd(3, argv, lens);
    }
    drain();
}
void __faasm_push_state_partial(const char *key) { __faasm_push_state(key); }
void __faasm_pull_state(const char *key, long len) {
    struct copy *c = copy_of(key);
    if (c) __faasm_read_state(key, c->data, len < c->len ? len : c->len);
}
void __faasm_flag_state_dirty(const char *key, long total) { (void)key; (void)total; }
void __faasm_flag_state_offset_dirty(const char *key, long t, long o, long l) {
    (void)key; (void)t; (void)o; (void)l;
}
unsigned int __faasm_conf_flag(const char *key) { (void)key; return 0; }

/* Not used by these functions: they stop the process if called. */
static void unsupported(const char *name) {
    fprintf(stderr, "shim: %s is not implemented natively\n", name);
    exit(73);
}
#define UNSUPPORTED(name, ...) \
    void name(__VA_ARGS__) { unsupported(#name); }
UNSUPPORTED(__faasm_push_state_partial_mask, const char *k, const char *m)
UNSUPPORTED(__faasm_lock_state_read, const char *k)
UNSUPPORTED(__faasm_unlock_state_read, const char *k)
UNSUPPORTED(__faasm_lock_state_write, const char *k)
UNSUPPORTED(__faasm_unlock_state_write, const char *k)
UNSUPPORTED(__faasm_lock_state_global_read, const char *k)
UNSUPPORTED(__faasm_unlock_state_global_read, const char *k)
UNSUPPORTED(__faasm_lock_state_global_write, const char *k)
UNSUPPORTED(__faasm_unlock_state_global_write, const char *k)
UNSUPPORTED(__faasm_append_state, const char *k, const unsigned char *d, long l)
UNSUPPORTED(__faasm_read_appended_state, const char *k, unsigned char *d, long l, long n)
UNSUPPORTED(__faasm_clear_appended_state, const char *k)

/* ---- chaining: one process (or container) per call ---- */

struct child { pid_t pid; int fd; char bundle[256]; unsigned char *out; int len; int rc; int done; };
static struct child kids[4096];
static unsigned nkids;
static const char *self_path;

static const char *entry_name(int (*f)(void)) {
    for (const struct faasm_native_entry *e = faasm_native_entries; e->name; e++)
        if (e->func == f) return e->name;
    return NULL;
}

/* config.json for one call: the template with @ENTRY@ and @INPUT@ replaced. */
static void write_config(const char *dir, const char *entry, const char *in) {
    static char *tmpl;
    static long tlen;
    if (!tmpl) {
        const char *p = getenv("PAPER_RUNC_TEMPLATE");
        FILE *f = p ? fopen(p, "r") : NULL;
        if (!f) die("PAPER_RUNC_TEMPLATE");
        fseek(f, 0, SEEK_END);
        tlen = ftell(f);
        rewind(f);
        tmpl = malloc(tlen + 1);
        if (fread(tmpl, 1, tlen, f) != (size_t)tlen) die("read template");
        tmpl[tlen] = 0;
        fclose(f);
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) die("config.json");
    for (const char *s = tmpl; *s;) {
        if (!strncmp(s, "@ENTRY@", 7)) { fputs(entry, f); s += 7; }
        else if (!strncmp(s, "@INPUT@", 7)) { fputs(in, f); s += 7; }
        else fputc(*s++, f);
    }
    fclose(f);
}

static unsigned start_child(const char *entry, const unsigned char *in, long len) {
    if (nkids >= sizeof(kids) / sizeof(kids[0])) return 0;
    char arg[1024];
    if (len >= (long)sizeof(arg)) return 0;
    memcpy(arg, in, len);
    arg[len] = 0;
    for (long i = 0; i < len; i++)
        if (arg[i] == '"' || arg[i] == '\\' || arg[i] < 32) return 0; /* JSON-safe inputs only */
    const char *mode = getenv("PAPER_LAUNCH");
    if (!mode) mode = "fork";
    struct child *k = &kids[nkids];
    memset(k, 0, sizeof(*k));
    char id[64];
    snprintf(id, sizeof(id), "paper-%d-%u", getpid(), nkids);
    if (!strcmp(mode, "runc")) {
        const char *root = getenv("PAPER_BUNDLES");
        snprintf(k->bundle, sizeof(k->bundle), "%s/%s", root ? root : "/tmp", id);
        if (mkdir(k->bundle, 0755) < 0) die("mkdir bundle");
        write_config(k->bundle, entry, arg);
    }
    drain(); /* nothing of ours pending in a child */
    int p[2];
    if (pipe(p) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        if (!strcmp(mode, "runc")) {
            const char *rr = getenv("PAPER_RUNC_ROOT");
            execlp("runc", "runc", "--root", rr ? rr : "/run/paper-runc", "run", "--bundle",
                   k->bundle, id, (char *)0);
        } else if (!strcmp(mode, "unshare")) {
            execlp("unshare", "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--",
                   self_path, entry, arg, (char *)0);
        } else {
            execl(self_path, self_path, entry, arg, (char *)0);
        }
        _exit(127);
    }
    close(p[1]);
    k->pid = pid;
    k->fd = p[0];
    return ++nkids;
}

unsigned int __faasm_chain_ptr(int (*f)(), const unsigned char *in, long len) {
    const char *name = entry_name((int (*)(void))f);
    return name ? start_child(name, in, len) : 0;
}
unsigned int __faasm_chain_name(const char *name, const unsigned char *in, long len) {
    for (const struct faasm_native_entry *e = faasm_native_entries; e->name; e++)
        if (!strcmp(e->name, name)) return start_child(name, in, len);
    return 0;
}

static struct child *finish(unsigned id) {
    if (id == 0 || id > nkids) return NULL;
    struct child *k = &kids[id - 1];
    if (k->done) return k;
    size_t cap = 256, n = 0;
    k->out = malloc(cap);
    for (;;) {
        if (n == cap) k->out = realloc(k->out, cap *= 2);
        ssize_t r = read(k->fd, k->out + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += r;
    }
    close(k->fd);
    int st;
    while (waitpid(k->pid, &st, 0) < 0 && errno == EINTR) {}
    k->rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    k->len = n;
    k->done = 1;
    if (k->bundle[0]) {
        char path[512];
        snprintf(path, sizeof(path), "%s/config.json", k->bundle);
        unlink(path);
        rmdir(k->bundle);
    }
    return k;
}

int __faasm_await_call(unsigned int id) {
    struct child *k = finish(id);
    return k ? k->rc : -1;
}
int __faasm_await_call_output(unsigned int id, char **out, int *len) {
    struct child *k = finish(id);
    if (!k) return -1;
    *out = (char *)k->out;
    *len = k->len;
    return k->rc;
}

/* ---- entry ---- */

static int run_entry(const char *entry) {
    if (!entry || !strcmp(entry, "main") || !strcmp(entry, "-")) {
        char *argv[] = {(char *)"fn", NULL};
        return faasm_main(1, argv);
    }
    for (const struct faasm_native_entry *e = faasm_native_entries; e->name; e++)
        if (!strcmp(e->name, entry)) return e->func();
    fprintf(stderr, "shim: no entry %s\n", entry);
    return 127;
}

static int read_full(int fd, void *buf, size_t n) {
    for (size_t at = 0; at < n;) {
        ssize_t r = read(fd, (char *)buf + at, n - at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        at += r;
    }
    return 0;
}
static void write_full(int fd, const void *buf, size_t n) {
    for (size_t at = 0; at < n;) {
        ssize_t r = write(fd, (const char *)buf + at, n - at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) exit(72);
        at += r;
    }
}

int main(int argc, char *argv[]) {
    self_path = "/proc/self/exe";
    static char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) { exe[n] = 0; self_path = exe; }
    if (argc >= 2 && !strcmp(argv[1], "--serve")) {
        const char *entry = argc >= 3 ? argv[2] : NULL;
        for (;;) {
            uint32_t len;
            if (read_full(0, &len, 4) < 0) return 0;
            free(input);
            input = malloc(len + 1);
            if (read_full(0, input, len) < 0) return 0;
            input_len = len;
            output_len = 0;
            int32_t rc = run_entry(entry);
            drain();
            uint32_t ol = output_len;
            write_full(1, &rc, 4);
            write_full(1, &ol, 4);
            write_full(1, output, ol);
        }
    }
    const char *entry = argc >= 2 ? argv[1] : NULL;
    const char *in = argc >= 3 ? argv[2] : "";
    input_len = strlen(in);
    input = (unsigned char *)strdup(in);
    int rc = run_entry(entry);
    drain();
    if (output_len) write_full(1, output, output_len);
    return rc;
}
