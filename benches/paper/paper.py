#!/usr/bin/python3
"""The paper's two experiments, run by benches/paper/run.sh (which builds
everything first and passes the paths). Starts its own redis-server and
`faaslet serve` processes and stops them; runs the container-per-call
(runc) and process-per-call (unshare) baselines through the native
binaries and shim.c. Prints both tables and the summary line, writes
target/paper/{results.json,results.md,*.png}.

Systems:
  faaslet          shared state (read_state_ptr), Proto-Faaslets
  faaslet-noshare  state copied in (read_state), every call a fresh
                   instance (`faaslet serve --no-proto-faaslets`)
  runc             a fresh OCI container per call (worker/cold calls),
                   same function compiled natively, state in the same Redis
  unshare          a fresh process in fresh namespaces per call (the lower
                   bound of any container)
"""
import argparse
import concurrent.futures as cf
import http.client
import json
import math
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

USER = "demo"
SYSTEMS = ["faaslet", "faaslet-noshare", "runc", "unshare"]
BASELINE = "runc"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- redis

class Redis:
    """A minimal RESP client (no dependency beyond the stdlib)."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t in (b"+", b":"):
            return rest
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def net_bytes(self):
        info = self.cmd("INFO", "stats").decode()
        d = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
        return int(d["total_net_input_bytes"]), int(d["total_net_output_bytes"])

    def key(self, k):
        return "faaslet:v:%s/%s" % (USER, k)


# ---------------------------------------------------------------- processes

class Procs:
    """Every long-running process this script starts; all stopped at exit."""

    def __init__(self, pidfile):
        self.procs = []
        self.pidfile = pidfile

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        with open(self.pidfile, "a") as f:
            f.write("%d\n" % p.pid)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


# ---------------------------------------------------------------- memory

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the PSS summed over the process trees of `roots` (and,
    separately, of redis-server) every `period` seconds; keeps the peaks."""

    def __init__(self, roots, redis_pid, period=0.05):
        self.roots, self.redis_pid, self.period = roots, redis_pid, period
        self.peak = self.peak_total = self.peak_procs = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        kids = children_map()
        seen, todo = set(), [r() if callable(r) else r for r in self.roots]
        while todo:
            p = todo.pop()
            if p is None or p in seen:
                continue
            seen.add(p)
            todo.extend(kids.get(p, []))
        sys_kb = sum(pss_kb(p) for p in seen)
        red = pss_kb(self.redis_pid)
        self.peak = max(self.peak, sys_kb)
        self.peak_total = max(self.peak_total, sys_kb + red)
        self.peak_procs = max(self.peak_procs, len(seen))

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.period)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.t.join()
        self.sample()


# ---------------------------------------------------------------- faaslet

def req(port, method, path, body=b"", timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, r.getheader("x-faaslet-return-code"), data
    finally:
        c.close()


class Worker:
    def __init__(self, ctx, share, threads):
        self.ctx = ctx
        self.port = free_port()
        data = os.path.join(ctx.work, "worker-%s-%d" % ("share" if share else "noshare", self.port))
        argv = [ctx.args.faaslet, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data", data,
                "--state", "redis://127.0.0.1:%d" % ctx.redis_port, "--threads", str(threads),
                "--max-body", str(1 << 30), "--timeout", "900", "--queue", "100000"]
        if not share:
            argv.append("--no-proto-faaslets")
        self.log = open(os.path.join(ctx.work, "serve-%d.log" % self.port), "w")
        self.proc = ctx.procs.start(argv, stdout=self.log, stderr=self.log)
        for _ in range(600):
            try:
                if req(self.port, "GET", "/ping", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("faaslet serve exited: see %s" % self.log.name)
            time.sleep(0.05)
        else:
            raise SystemExit("faaslet serve did not start")

    def upload(self, name, path):
        with open(path, "rb") as f:
            st, _, body = req(self.port, "PUT", "/f/%s/%s" % (USER, name), f.read())
        if st != 201:
            raise SystemExit("upload %s: %d %s" % (name, st, body[:300]))

    def put_state(self, key, path):
        with open(path, "rb") as f:
            st, _, body = req(self.port, "PUT", "/s/%s/%s" % (USER, key), f.read())
        if st >= 300:
            raise SystemExit("state %s: %d %s" % (key, st, body[:300]))

    def call(self, name, inp, timeout=900):
        st, rc, body = req(self.port, "POST", "/f/%s/%s" % (USER, name), inp.encode(), timeout)
        return st, int(rc) if rc is not None else -1, body

    def call_keepalive(self, name, inp, timeout=120):
        """A call on this thread's persistent connection (as wrk or any
        HTTP/1.1 client keeps one), reopened if the worker closed it."""
        local = self.__dict__.setdefault("_local", threading.local())
        for attempt in (0, 1):
            c = getattr(local, "conn", None)
            if c is None:
                c = local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                c.request("POST", "/f/%s/%s" % (USER, name), body=inp.encode())
                r = c.getresponse()
                body = r.read()
                rc = r.getheader("x-faaslet-return-code")
                return r.status, int(rc) if rc is not None else -1, body
            except (http.client.HTTPException, OSError):
                c.close()
                local.conn = None
                if attempt:
                    raise

    def stop(self):
        self.ctx.procs.stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------- native

def native_env(ctx, launch):
    env = dict(os.environ)
    env.update(PAPER_REDIS="127.0.0.1:%d" % ctx.redis_port, PAPER_USER=USER, PAPER_LAUNCH=launch,
               PAPER_RUNC_TEMPLATE=ctx.template, PAPER_BUNDLES=ctx.bundles,
               PAPER_RUNC_ROOT=ctx.runc_root)
    return env


def make_template(ctx):
    """The OCI config every per-call bundle starts from (`runc spec`, then:
    no terminal, the read-only root file system built by run.sh, the
    host's network namespace so the function reaches Redis on 127.0.0.1,
    fresh pid, ipc, uts and mount namespaces)."""
    d = os.path.join(ctx.work, "spec")
    os.makedirs(d, exist_ok=True)
    if os.path.exists(os.path.join(d, "config.json")):
        os.remove(os.path.join(d, "config.json"))
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    c["process"]["terminal"] = False
    c["process"]["args"] = ["/@FN@", "@ENTRY@", "@INPUT@"]
    c["process"]["env"] += ["PAPER_REDIS=127.0.0.1:%d" % ctx.redis_port, "PAPER_USER=" + USER]
    c["root"] = {"path": ctx.args.rootfs, "readonly": True}
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    c["hostname"] = "fn"
    text = json.dumps(c, indent=1)
    for fn in ("sgd", "mlp"):
        path = os.path.join(ctx.work, "template-%s.json" % fn)
        with open(path, "w") as f:
            f.write(text.replace("@FN@", fn))
    ctx.template = os.path.join(ctx.work, "template-sgd.json")


# ---------------------------------------------------------------- training

def parse_train(out):
    epochs, done = [], None
    for line in out.splitlines():
        p = line.split()
        if p and p[0] == "epoch":
            epochs.append((int(p[1]), float(p[3]), float(p[5])))
        elif p and p[0] == "done":
            done = (int(p[1]), float(p[2]))
    return epochs, done


def exact_loss(ctx, r):
    """The mean logistic loss of the weights now in Redis over the whole
    training set: the same judge for every system."""
    d = ctx.train_data
    w = r.cmd("GET", r.key("sgd_weights"))
    try:
        import numpy as np
    except ImportError:  # the smoke check's tiny set, without numpy
        w = struct.unpack("<%df" % (len(w) // 4), w)
        raw, rp, lo, co, vo = d["raw"], d["rp"], d["lo"], d["co"], d["vo"]
        rows, nnz = d["rows"], d["nnz"]
        row_ptr = struct.unpack_from("<%dI" % (rows + 1), raw, rp)
        label = struct.unpack_from("<%df" % rows, raw, lo)
        col = struct.unpack_from("<%dI" % nnz, raw, co)
        val = struct.unpack_from("<%df" % nnz, raw, vo)
        total = 0.0
        for i in range(rows):
            m = label[i] * sum(w[col[k]] * val[k] for k in range(row_ptr[i], row_ptr[i + 1]))
            total += math.log1p(math.exp(-m)) if m > 0 else -m + math.log1p(math.exp(m))
        return total / rows
    w = np.frombuffer(w, dtype=np.float32)
    raw, rows, nnz = d["raw"], d["rows"], d["nnz"]
    row_ptr = np.frombuffer(raw, np.uint32, rows + 1, d["rp"])
    label = np.frombuffer(raw, np.float32, rows, d["lo"])
    col = np.frombuffer(raw, np.uint32, nnz, d["co"])
    val = np.frombuffer(raw, np.float32, nnz, d["vo"])
    dots = np.add.reduceat(w[col] * val, row_ptr[:-1].astype(np.int64))
    m = label * dots
    return float(np.mean(np.logaddexp(0, -m.astype(np.float64))))


def load_train_data(ctx):
    raw = open(ctx.args.data, "rb").read()
    magic, rows, feats, nnz, total, rp, lo, co, vo, seed = struct.unpack("<IIIIQQQQQQ", raw[:64])
    ctx.train_data = dict(rows=rows, features=feats, nnz=nnz, bytes=total, raw=raw,
                          rp=rp, lo=lo, co=co, vo=vo)


def train_one(ctx, system, n, worker=None, warmup=False):
    a = ctx.args
    r = ctx.redis
    inp = "%d %d %g %g" % (n, 1 if warmup else a.max_epochs, 0 if warmup else a.target, a.lr)
    before = r.net_bytes()
    t0 = time.monotonic()
    if system.startswith("faaslet"):
        name = "sgd" if system == "faaslet" else "sgd_copy"
        with Sampler([worker.proc.pid], ctx.redis_proc.pid) as s:
            st, rc, out = worker.call(name, inp)
        wall = time.monotonic() - t0
        if st != 200:
            raise SystemExit("%s N=%d: HTTP %d %s" % (system, n, st, out[:500]))
        if warmup:
            return None
    else:
        p = subprocess.Popen([a.sgd_native, "main", inp], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=native_env(ctx, system))
        with Sampler([p.pid], ctx.redis_proc.pid) as s:
            out, err = p.communicate()
        wall = time.monotonic() - t0
        rc = p.returncode
        if err:
            log(err.decode(errors="replace")[-2000:])
        if warmup:
            return None
    after = r.net_bytes()
    epochs, done = parse_train(out.decode(errors="replace"))
    res = dict(system=system, n=n, rc=rc, time_s=wall, epochs=len(epochs),
               loss=done[1] if done else None, curve=epochs,
               pss_mb=s.peak / 1024, pss_with_redis_mb=s.peak_total / 1024, procs=s.peak_procs,
               to_redis_mb=(after[0] - before[0]) / 1e6, from_redis_mb=(after[1] - before[1]) / 1e6)
    res["exact_loss"] = exact_loss(ctx, r)
    log("  %-16s N=%-2d rc=%d %6.2f s, %2d epochs, loss %.4f (full data %.4f), PSS %.0f MB "
        "(+redis %.0f), redis in/out %.0f/%.0f MB" % (
            system, n, rc, wall, res["epochs"], res["loss"] or float("nan"), res["exact_loss"],
            res["pss_mb"], res["pss_with_redis_mb"], res["to_redis_mb"], res["from_redis_mb"]))
    return res


def training(ctx):
    a = ctx.args
    load_train_data(ctx)
    d = ctx.train_data
    log("training set: %d rows, %d features, %d nonzeros, %.0f MB" % (
        d["rows"], d["features"], d["nnz"], d["bytes"] / 1e6))
    results = []
    for system in ctx.systems:
        log("training: %s" % system)
        worker = None
        if system.startswith("faaslet"):
            share = system == "faaslet"
            worker = Worker(ctx, share, threads=max(a.ns) + 2)
            worker.upload("sgd" if share else "sgd_copy", a.sgd_wasm if share else a.sgd_copy_wasm)
            worker.put_state("sgd_data", a.data)
        # One epoch, not measured: the first call after the upload (page
        # cache, allocator, the setup's buffers) is not what a run costs.
        train_one(ctx, system, min(a.ns), worker, warmup=True)
        for n in a.ns:
            runs = [train_one(ctx, system, n, worker) for _ in range(a.repeats)]
            runs.sort(key=lambda r: r["time_s"])
            med = dict(runs[len(runs) // 2])
            med["times"] = [r["time_s"] for r in runs]
            med["all_losses"] = [r["exact_loss"] for r in runs]
            med["all_rc"] = [r["rc"] for r in runs]
            med["all_loss"] = [r["loss"] for r in runs]
            results.append(med)
        if worker:
            worker.stop()
    return results


# ---------------------------------------------------------------- inference

class NativePool:
    """The baseline's calls: warm ones go to an idle long-running process
    or container (`--serve`), started before the load and kept; cold ones
    start a fresh container (or namespaced process) that serves one call
    and exits."""

    def __init__(self, ctx, launch, warm):
        self.ctx, self.launch = ctx, launch
        self.n = 0
        self.lock = threading.Lock()
        self.idle = []
        self.cv = threading.Condition(self.lock)
        self.warm_procs = [self.spawn(["--serve", "main"], pipe_in=True) for _ in range(warm)]
        self.idle = list(self.warm_procs)

    def argv(self, args):
        ctx = self.ctx
        if self.launch == "unshare":
            return ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--", ctx.args.mlp_native] + args
        with self.lock:
            self.n += 1
            cid = "paper-mlp-%d-%d" % (os.getpid(), self.n)
        bundle = os.path.join(ctx.bundles, cid)
        os.makedirs(bundle)
        with open(os.path.join(ctx.work, "template-mlp.json")) as f:
            c = json.load(f)
        c["process"]["args"] = ["/mlp"] + args
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(c, f)
        return ["runc", "--root", ctx.runc_root, "run", "--bundle", bundle, cid]

    def spawn(self, args, pipe_in=False):
        return self.ctx.procs.start(self.argv(args), stdin=subprocess.PIPE if pipe_in else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    env=native_env(self.ctx, self.launch))

    def warm(self, inp):
        with self.cv:
            while not self.idle:
                self.cv.wait()
            p = self.idle.pop()
        try:
            b = inp.encode()
            p.stdin.write(struct.pack("<I", len(b)) + b)
            p.stdin.flush()
            rc, n = struct.unpack("<iI", p.stdout.read(8))
            out = p.stdout.read(n)
        finally:
            with self.cv:
                self.idle.append(p)
                self.cv.notify()
        return rc, out

    def cold(self, inp):
        argv = self.argv(["main", inp])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           env=native_env(self.ctx, self.launch), timeout=120)
        if self.launch == "runc":
            bundle = argv[argv.index("--bundle") + 1]
            os.remove(os.path.join(bundle, "config.json"))
            os.rmdir(bundle)
        return p.returncode, p.stdout

    def close(self):
        for p in self.warm_procs:
            p.stdin.close()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.ctx.procs.stop(p)


def run_load(call, n, rate, cold_flags, seeds):
    """Open loop: request i is due at t0 + i/rate whether or not earlier
    ones have finished; its latency runs from when it was due to when its
    answer arrived (so a late sender cannot hide queueing)."""
    lat, outs, errors = [None] * n, [None] * n, [0]
    pool = cf.ThreadPoolExecutor(max_workers=256)
    t0 = time.monotonic() + 0.2
    end = [t0]

    def one(i, due):
        try:
            rc, out = call(seeds[i], cold_flags[i], i)
            done = time.monotonic()
            if rc != 0:
                errors[0] += 1
                return
            lat[i] = done - due
            outs[i] = out
            end[0] = max(end[0], done)
        except Exception as e:  # noqa: BLE001 (a failed request is counted, not fatal)
            errors[0] += 1
            log("request %d failed: %s" % (i, e))

    futs = []
    for i in range(n):
        due = t0 + i / rate
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        futs.append(pool.submit(one, i, due))
    for f in futs:
        f.result()
    pool.shutdown()
    ok = [x for x in lat if x is not None]
    # Over the whole load window (the last request is due at (n-1)/rate).
    return ok, outs, errors[0], max(end[0] - t0, n / rate)


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(math.ceil(p / 100 * len(xs))) - 1)]


def inference(ctx):
    a = ctx.args
    n = max(1, int(a.rate * a.duration))
    results, outputs = [], {}
    for system in ctx.systems:
        log("inference: %s (%d requests at %g/s per cold-start share)" % (system, n, a.rate))
        worker = pool = None
        if system.startswith("faaslet"):
            share = system == "faaslet"
            wasm = a.mlp_wasm if share else a.mlp_copy_wasm
            worker = Worker(ctx, share, threads=0)
            worker.upload("mlp", wasm)
            worker.put_state("mlp_weights", a.mlp_weights)
            worker.call("mlp", "0")  # the warm function has been called: its pool is not empty
        else:
            r = ctx.redis
            with open(a.mlp_weights, "rb") as f:
                r.cmd("SET", r.key("mlp_weights"), f.read())
            pool = NativePool(ctx, system, warm=a.warm)
            for _ in range(a.warm):  # each warm process has loaded the model once
                pool.warm("0")
        for share_pct in a.shares:
            rng = random.Random(1000 + share_pct)
            cold = [rng.random() < share_pct / 100 for _ in range(n)]
            seeds = [str(rng.randrange(1 << 30)) for _ in range(n)]
            if worker:
                # A cold call is a call for a function this worker has never run:
                # its own name, uploaded from the same wasm before the load starts
                # (upload compiles, or loads cached code, and makes the Proto-Faaslet:
                # deployment, not the call).
                names = {}
                todo = [i for i in range(n) if cold[i]]
                for i in todo:
                    names[i] = "mlp_c%d_%d" % (share_pct, i)
                with cf.ThreadPoolExecutor(4) as ex:
                    list(ex.map(lambda i: worker.upload(names[i], wasm), todo))

                def call(seed, is_cold, i, names=names):
                    st, rc, out = worker.call_keepalive(names[i] if is_cold else "mlp", seed)
                    return (rc if st == 200 else -1), out
            else:
                def call(seed, is_cold, i):
                    return pool.cold(seed) if is_cold else pool.warm(seed)
            lat, outs, errors, span = run_load(call, n, a.rate, cold, seeds)
            for i, o in enumerate(outs):
                if o is not None:
                    outputs.setdefault(seeds[i], set()).add(o.split()[0])
            res = dict(system=system, cold_pct=share_pct, requests=n, errors=errors,
                       p50_ms=pct(lat, 50) * 1e3, p99_ms=pct(lat, 99) * 1e3,
                       throughput=len(lat) / span if span > 0 else 0.0,
                       lat_ms=sorted(x * 1e3 for x in lat))
            log("  %-16s cold %3d%%: p50 %8.2f ms, p99 %8.2f ms, %6.1f req/s, %d errors" % (
                system, share_pct, res["p50_ms"], res["p99_ms"], res["throughput"], errors))
            results.append(res)
        if worker:
            worker.stop()
        if pool:
            pool.close()
    disagree = [s for s, v in outputs.items() if len(v) > 1]
    return results, disagree


# ---------------------------------------------------------------- output

def tables(ctx, train, infer):
    a = ctx.args
    lines = []
    if train:
        d = ctx.train_data
        lines += ["### Training: HOGWILD! SGD to loss %g (%d rows, %d features, %.0f MB, lr %g)" % (
            a.target, d["rows"], d["features"], d["bytes"] / 1e6, a.lr), "",
            "| system | N | time to loss (s), median (range) | epochs | s/epoch | final loss (progressive / full data) "
            "| peak PSS, system (MB) | peak PSS, + Redis (MB) | to Redis (MB) | from Redis (MB) |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for r in train:
            rng_ = "%.2f (%.2f–%.2f)" % (r["time_s"], min(r["times"]), max(r["times"]))
            lines.append("| %s | %d | %s | %d | %.3f | %.4f / %.4f | %.0f | %.0f | %.1f | %.1f |" % (
                r["system"], r["n"], rng_, r["epochs"], r["time_s"] / max(1, r["epochs"]),
                r["loss"], r["exact_loss"], r["pss_mb"], r["pss_with_redis_mb"], r["to_redis_mb"],
                r["from_redis_mb"]))
        lines.append("")
        lo, hi = min(a.ns), max(a.ns)
        per = []
        for sname in ctx.systems:
            rl = [r for r in train if r["system"] == sname and r["n"] == lo]
            rh = [r for r in train if r["system"] == sname and r["n"] == hi]
            if rl and rh and hi > lo:
                per.append("%s %.2f MB" % (sname, (rh[0]["pss_mb"] - rl[0]["pss_mb"]) / (hi - lo)))
        if per:
            lines += ["Memory per extra worker ((PSS at N=%d - PSS at N=%d) / %d): %s." % (
                hi, lo, hi - lo, ", ".join(per)), ""]
    if infer:
        lines += ["### Inference: MLP (4.3 MB of weights), %g requests/s for %g s per share" % (
            a.rate, a.duration), "",
            "| system | cold starts | p50 (ms) | p99 (ms) | throughput (req/s) | errors |",
            "|---|---:|---:|---:|---:|---:|"]
        for r in infer:
            lines.append("| %s | %d%% | %.2f | %.2f | %.1f | %d |" % (
                r["system"], r["cold_pct"], r["p50_ms"], r["p99_ms"], r["throughput"], r["errors"]))
        lines.append("")
    return "\n".join(lines)


def plots(ctx, train, infer):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plots")
        return []
    out = []
    colors = {"faaslet": "tab:blue", "faaslet-noshare": "tab:orange", "runc": "tab:red", "unshare": "tab:gray"}
    if train:
        fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
        for s in ctx.systems:
            rs = [r for r in train if r["system"] == s]
            if not rs:
                continue
            ns = [r["n"] for r in rs]
            ax[0].plot(ns, [r["time_s"] for r in rs], "o-", label=s, color=colors[s])
            ax[1].plot(ns, [r["pss_with_redis_mb"] for r in rs], "o-", label=s, color=colors[s])
            ax[1].plot(ns, [r["pss_mb"] for r in rs], "x--", color=colors[s], alpha=0.6)
            ax[2].plot(ns, [r["to_redis_mb"] + r["from_redis_mb"] for r in rs], "o-", label=s, color=colors[s])
        ax[0].set(title="time to loss %g" % ctx.args.target, xlabel="workers N", ylabel="s")
        ax[1].set(title="peak PSS (solid: with Redis; dashed: without)", xlabel="workers N", ylabel="MB")
        ax[2].set(title="bytes to + from Redis", xlabel="workers N", ylabel="MB")
        for x in ax:
            x.set_xscale("log", base=2)
            x.set_xticks(ctx.args.ns, [str(n) for n in ctx.args.ns])
            x.grid(alpha=0.3)
            x.legend()
        fig.tight_layout()
        p = os.path.join(ctx.args.out, "training.png")
        fig.savefig(p, dpi=110)
        out.append(p)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        nmax = max(ctx.args.ns)
        for s in ctx.systems:
            for r in train:
                if r["system"] == s and r["n"] == nmax:
                    ax.plot([0] + [c[2] for c in r["curve"]], [math.log(2)] + [c[1] for c in r["curve"]],
                            "o-", label=s, color=colors[s])
        ax.axhline(ctx.args.target, ls=":", color="k")
        ax.set(title="loss against time, N = %d" % nmax, xlabel="s", ylabel="loss (progressive)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = os.path.join(ctx.args.out, "training_loss.png")
        fig.savefig(p, dpi=110)
        out.append(p)
    if infer:
        shares = ctx.args.shares
        fig, ax = plt.subplots(1, len(shares), figsize=(4 * len(shares), 3.8), squeeze=False)
        for j, sh in enumerate(shares):
            x = ax[0][j]
            for s in ctx.systems:
                for r in infer:
                    if r["system"] == s and r["cold_pct"] == sh and r["lat_ms"]:
                        l = r["lat_ms"]
                        x.plot(l, [(i + 1) / len(l) for i in range(len(l))], label=s, color=colors[s])
            x.set(title="%d%% cold starts" % sh, xlabel="latency (ms)", ylabel="CDF")
            x.set_xscale("log")
            x.grid(alpha=0.3)
            x.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(ctx.args.out, "inference.png")
        fig.savefig(p, dpi=110)
        out.append(p)
    return out


def main():
    ap = argparse.ArgumentParser()
    for k in ("faaslet", "sgd_wasm", "sgd_copy_wasm", "mlp_wasm", "mlp_copy_wasm", "sgd_native",
              "mlp_native", "rootfs", "data", "mlp_weights", "out"):
        ap.add_argument("--" + k.replace("_", "-"), required=True)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--ns", default="2,4,8,16")
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2.0)
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3,
                    help="training runs per system and N; the tables show the median by time")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="how far above the target a run's final model may be on the whole training set")
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--shares", default="0,20,50,100")
    ap.add_argument("--warm", type=int, default=2, help="warm processes/containers of a baseline")
    ap.add_argument("--skip", default="", help="training and/or inference")
    a = ap.parse_args()
    for k in ("faaslet", "sgd_wasm", "sgd_copy_wasm", "mlp_wasm", "mlp_copy_wasm", "sgd_native",
              "mlp_native", "rootfs", "data", "mlp_weights", "out"):
        setattr(a, k, os.path.abspath(getattr(a, k)))  # bundles and the worker have other cwds
    a.ns = [int(x) for x in a.ns.split(",")]
    a.shares = [int(x) for x in a.shares.split(",")]

    class Ctx:
        pass
    ctx = Ctx()
    ctx.args = a
    ctx.systems = [s for s in a.systems.split(",") if s]
    ctx.work = os.path.join(a.out, "work")
    os.makedirs(ctx.work, exist_ok=True)
    ctx.procs = Procs(os.path.join(ctx.work, "pids"))
    ctx.bundles = os.path.join(ctx.work, "bundles")
    ctx.runc_root = os.path.join(ctx.work, "runc-root")
    os.makedirs(ctx.bundles, exist_ok=True)
    os.makedirs(ctx.runc_root, exist_ok=True)
    try:
        ctx.redis_port = free_port()
        ctx.redis_proc = ctx.procs.start(
            ["redis-server", "--port", str(ctx.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                ctx.redis = Redis(ctx.redis_port)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("redis-server did not start")
        if any(s in ("runc",) for s in ctx.systems):
            make_template(ctx)
        else:
            ctx.template = ""
        train = [] if "training" in a.skip else training(ctx)
        infer, disagree = ([], []) if "inference" in a.skip else inference(ctx)
    finally:
        ctx.procs.stop_all()
    text = tables(ctx, train, infer)
    print(text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(dict(args=vars(a), training=train, inference=infer), f, indent=1)
    pngs = plots(ctx, train, infer)
    for p in pngs:
        log("plot: %s" % p)

    failures = []
    for r in train:
        for rc, loss in zip(r["all_rc"], r["all_loss"]):
            if rc != 0 or loss is None or loss > a.target:
                failures.append("%s N=%d did not reach loss %g (rc %d, loss %s)" % (
                    r["system"], r["n"], a.target, rc, loss))
    for r in train:
        # The model each run ended with, judged on the whole training set by
        # the same code for every system: it must be at least as good as the
        # target the run stopped at.
        if max(r["all_losses"]) > a.target + a.tolerance:
            failures.append("%s N=%d: full-data loss %.4f is above the target %g (+%g)" % (
                r["system"], r["n"], max(r["all_losses"]), a.target, a.tolerance))
    for r in infer:
        if r["errors"]:
            failures.append("inference %s %d%% cold: %d failed requests" % (r["system"], r["cold_pct"], r["errors"]))
    if disagree:
        failures.append("inference outputs differ between systems for %d inputs" % len(disagree))

    def get(rows, **kw):
        for r in rows:
            if all(r[k] == v for k, v in kw.items()):
                return r
        return None
    summary = []
    nmax = max(a.ns)
    f16, b16 = get(train, system="faaslet", n=nmax), get(train, system=BASELINE, n=nmax)
    if f16 and b16:
        summary.append("training: %.1f× faster, %.1f× less memory" % (
            b16["time_s"] / f16["time_s"], b16["pss_with_redis_mb"] / f16["pss_with_redis_mb"]))
    fi, bi = get(infer, system="faaslet", cold_pct=50), get(infer, system=BASELINE, cold_pct=50)
    if fi and bi:
        summary.append("inference p99: %.1f× lower" % (bi["p99_ms"] / fi["p99_ms"]))
    if failures:
        for f in failures:
            log("FAIL: " + f)
    if summary:
        print("; ".join(summary))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
