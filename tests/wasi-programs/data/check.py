# Exercised by run.sh under CPython-on-WASI, once under faaslet and once under
# wasmtime; the two outputs must be identical. Prints only deterministic facts.
import errno, gzip, hashlib, io, json, os, random, sys, time, zlib

print("argv", sys.argv[1:])
print("platform", sys.platform, sys.version_info[:2])
print("env", sorted(k for k in os.environ if not k.startswith("PYTHON")))
data = sys.stdin.buffer.read()
print("stdin", len(data), hashlib.sha256(data).hexdigest()[:16])

# compression round trips (deterministic output sizes and digests)
blob = (open("/data/check.py", "rb").read() * 20)
for name, c, d in [
    ("zlib", lambda b: zlib.compress(b, 9), zlib.decompress),
    ("gzip", lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
]:
    z = c(blob)
    assert d(z) == blob
    print(name, len(blob), "->", len(z), hashlib.sha256(z).hexdigest()[:16])

# read-only mount
print("ls /data", sorted(os.listdir("/data")))
try:
    open("/data/new.txt", "w")
    print("ro write: allowed")
except OSError as e:
    # faaslet says EROFS (a read-only mount), wasmtime EPERM (no rights).
    ok = e.errno in (errno.EROFS, errno.EPERM)
    print("ro write:", "denied" if ok else errno.errorcode.get(e.errno))
try:
    open("/data/missing.txt")
except OSError as e:
    print("missing:", errno.errorcode.get(e.errno))

# writable mount: create, append, seek, truncate, rename, mkdir, stat, unlink
w = "/work"
with open(f"{w}/a.txt", "w") as f:
    f.write("hello\n")
with open(f"{w}/a.txt", "a") as f:
    f.write("world\n")
with open(f"{w}/a.txt", "r+b") as f:
    f.seek(6)
    print("read@6", f.read())
    f.seek(0, io.SEEK_END)
    print("tell end", f.tell())
    f.truncate(5)
print("size", os.stat(f"{w}/a.txt").st_size)
os.mkdir(f"{w}/sub")
os.rename(f"{w}/a.txt", f"{w}/sub/b.txt")
print("walk", sorted((r, sorted(fs)) for r, _, fs in os.walk(w)))
print("isdir", os.path.isdir(f"{w}/sub"), os.path.isfile(f"{w}/sub/b.txt"))
try:
    os.rmdir(f"{w}/sub")
except OSError as e:
    print("rmdir nonempty:", errno.errorcode.get(e.errno))
try:
    os.mkdir(f"{w}/sub")
except OSError as e:
    print("mkdir exists:", errno.errorcode.get(e.errno))
os.unlink(f"{w}/sub/b.txt")
os.rmdir(f"{w}/sub")
print("after", os.listdir(w))
with open(f"{w}/out.json", "w") as f:
    json.dump({"pi": 3.14159, "list": list(range(5))}, f, sort_keys=True)
print("json", open(f"{w}/out.json").read())

# more filesystem corners
def err(f):
    try:
        r = f()
        return "ok" if r is None else r
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
names = [f"f{i:03d}-{'x' * (i % 40)}" for i in range(300)]
os.mkdir(f"{w}/many")
for n in names:
    open(f"{w}/many/{n}", "w").close()
print("readdir 300", sorted(os.listdir(f"{w}/many")) == sorted(names))
print("scandir", sorted((e.name, e.is_file(), e.is_dir()) for e in os.scandir(w)))
big = bytes(range(256)) * 8192
with open(f"{w}/big.bin", "wb") as f:
    f.write(big)
with open(f"{w}/big.bin", "rb") as f:
    print("big", len(f.read()) == len(big), hashlib.sha256(big).hexdigest()[:16])
fd = os.open(f"{w}/big.bin", os.O_RDWR)
print("pread", os.pread(fd, 4, 1000), "pwrite", os.pwrite(fd, b"ZZ", 10), os.pread(fd, 4, 9))
print("fstat", os.fstat(fd).st_size, "lseek", os.lseek(fd, 0, os.SEEK_END))
os.ftruncate(fd, 100)
print("ftruncate", os.fstat(fd).st_size)
os.close(fd)
print("excl", err(lambda: os.open(f"{w}/big.bin", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
print("trunc", err(lambda: os.close(os.open(f"{w}/big.bin", os.O_TRUNC | os.O_WRONLY))), os.stat(f"{w}/big.bin").st_size)
print("open dir for write", err(lambda: open(w + "/many", "w")))
print("listdir file", err(lambda: os.listdir(w + "/big.bin")))
print("unlink dir", err(lambda: os.unlink(w + "/many")))
print("rmdir file", err(lambda: os.rmdir(w + "/big.bin")))
print("escape ..", err(lambda: open(w + "/../../../etc/passwd").read(5)))
print("escape abs", err(lambda: open("/etc/passwd").read(5)))
print("symlink", err(lambda: os.symlink("big.bin", w + "/link")), err(lambda: os.readlink(w + "/link")))
print("link stat", err(lambda: os.stat(w + "/link").st_size), err(lambda: os.lstat(w + "/link").st_size > 0))
print("symlink escape", err(lambda: os.symlink("/etc/passwd", w + "/bad")), err(lambda: open(w + "/bad").read(4)))
os.utime(f"{w}/big.bin", (1_000_000_000, 1_234_567_890))
print("utime", int(os.stat(f"{w}/big.bin").st_mtime))
os.replace(f"{w}/out.json", f"{w}/big.bin")
print("replace", os.stat(f"{w}/big.bin").st_size)
u = f"{w}/été-日本.txt"
open(u, "w").write("unicode")
print("unicode", [n for n in os.listdir(w) if n.endswith(".txt")])
os.chdir(w)
print("chdir", os.getcwd(), open("big.bin").read(5))
print("isatty", sys.stdin.isatty(), sys.stdout.isatty())
print("seek past end", err(lambda: open(f"{w}/big.bin", "rb").seek(1 << 20)))
print("cputime", time.process_time() >= 0, time.gmtime(0)[:3])

# clocks and randomness
t0, m0 = time.time(), time.monotonic()
time.sleep(0.02)
print("time sane", t0 > 1.6e9, time.monotonic() - m0 >= 0.015)
print("urandom", len(os.urandom(32)))
random.seed(42)
print("random", [random.randint(0, 99) for _ in range(5)])
print("stderr next", flush=True)
print("to stderr", file=sys.stderr)
# CPython's zipfile tool (what `python -m zipfile -c` runs): walks a
# directory, reads mtimes and writes an archive, compared byte for byte.
import zipfile
zipfile.main(["-c", f"{w}/data.zip", "/data"])
zipfile.main(["-t", f"{w}/data.zip"])

if sys.argv[1:] == ["raise"]:
    raise RuntimeError("deliberate failure: traceback and exit code 1")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
