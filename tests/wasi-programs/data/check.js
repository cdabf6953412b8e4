// Run by qjs-faaslet (sdk/js) under faaslet and under wasmtime: stdin,
// output, the language's libraries, promises and an uncaught exception
// (when the input asks for one) must give the same bytes and exit code.
print("before input:", typeof readInput, scriptArgs.join(","));
const input = readInput();
print("input:", JSON.stringify(input), "again:", JSON.stringify(readInput()));
const words = input.split(/\s+/).filter(Boolean);
const counts = new Map();
for (const w of words) counts.set(w.toLowerCase(), (counts.get(w.toLowerCase()) || 0) + 1);
print("words:", JSON.stringify([...counts].sort()));
print("set:", [...new Set([3, 1, 3, 2, 1])].join(" "));
class Shape { constructor(n) { this.n = n; } area() { return 0; } toString() { return `${this.constructor.name}(${this.area().toFixed(3)})`; } }
class Circle extends Shape { area() { return Math.PI * this.n ** 2; } }
class Square extends Shape { area() { return this.n * this.n; } }
print("shapes:", [new Circle(1.5), new Square(2)].map(String).join(", "));
function* fib() { let [a, b] = [0n, 1n]; for (;;) { yield a; [a, b] = [b, a + b]; } }
const f = []; for (const v of fib()) { if (f.length === 100) break; f.push(v); }
print("fib(99):", f[99].toString(), "digits", f[99].toString().length);
print("regexp:", "2026-12-04T21:40:03Z".replace(/(\d+)-(\d+)-(\d+)T.*/, "$3/$2/$1"),
      /(?<y>\d{4})/.exec("year 1999").groups.y);
print("date:", new Date(Date.UTC(2020, 1, 29, 12, 0, 0)).toISOString(), new Date(0).getTime());
print("json:", JSON.stringify({ b: [1, { c: null }], a: "\u00e9\u4e2d" }, null, 1).length);
print("typed:", Array.from(new Uint8Array(new Float64Array([1.5]).buffer)).join(","));
print("math:", Math.hypot(3, 4), Math.clz32(1), (0.1 + 0.2).toPrecision(17), 2 ** -1074);
print("sort:", [10, 9, 1, 100, 25].sort().join(), [10, 9, 1, 100, 25].sort((a, b) => a - b).join());
const p = new Proxy({}, { get: (_, k) => `<${String(k)}>` });
print("proxy:", p.anything, Symbol("s").toString(), typeof WeakRef);
print("unicode:", "ﬀ".toUpperCase(), "İ".toLowerCase().length, [..."👍🏽"].length, "e\u0301".normalize("NFC").length);
let order = [];
(async () => {
    order.push("async start");
    await null;
    order.push("after await");
    const r = await Promise.all([1, Promise.resolve(2), new Promise(res => res(3))]);
    order.push("all " + r.join("+"));
    print("order:", order.join(" | "));
    console.error("stderr line");
    if (input.includes("throw")) {
        const e = new TypeError("asked to throw");
        e.cause = "input";
        throw e;
    }
})().catch(e => { print("caught:", e.name, e.message); throw e; });
order.push("sync end");
