// Times the in-browser verifier (attest-wasm, as the console serves it) on a bundle, in
// Node's WebAssembly engine (V8, as in Chromium): node tools/wasm-verify-bench.mjs
// [verifier.wasm] [bundle.json] [controller key hex]. Prints the module size, the time to
// compile it, and the verification time per bundle over repeated runs.
import { readFileSync } from "node:fs";

const wasmPath = process.argv[2] ?? "target/verifier-wasm/wasm32-unknown-unknown/release/attest_wasm.wasm";
const bundlePath = process.argv[3] ?? "attest/tests/vectors/bundle.json";
const key = process.argv[4] ?? "5b9437adeaffbe8f41b13d96ed49d2f51cd6c266cd8ecc284b0552ec4912b8dd";

const bytes = readFileSync(wasmPath);
let t0 = performance.now();
const { instance } = await WebAssembly.instantiate(bytes, {});
const compileMs = performance.now() - t0;
const w = instance.exports;

function call(name, ...args) {
  const bufs = args.map((b) => {
    const p = w.hs_alloc(b.length);
    new Uint8Array(w.memory.buffer, p, b.length).set(b);
    return [p, b.length];
  });
  const packed = BigInt.asUintN(64, w[name](...bufs.flat()));
  const ptr = Number(packed >> 32n), len = Number(packed & 0xffffffffn);
  const text = new TextDecoder().decode(new Uint8Array(w.memory.buffer, ptr, len).slice());
  w.hs_free(ptr, len);
  for (const [p, l] of bufs) w.hs_free(p, l);
  return JSON.parse(text);
}

const bundle = readFileSync(bundlePath);
const opts = new TextEncoder().encode(JSON.stringify({ controller_key: key, now_ms: Date.now() }));
const first = call("hs_verify", bundle, opts);
if (!first.ok) {
  console.error("the bundle does not verify:", first);
  process.exit(1);
}
const runs = 50;
t0 = performance.now();
for (let i = 0; i < runs; i++) call("hs_verify", bundle, opts);
const perMs = (performance.now() - t0) / runs;
console.log(`module ${(bytes.length / 1024).toFixed(0)} KiB, compiled and instantiated in ${compileMs.toFixed(1)} ms`);
console.log(`bundle ${(bundle.length / 1024).toFixed(1)} KiB: ${first.report.evidence} signed messages, ${first.report.records} records`);
console.log(`verify: ${perMs.toFixed(2)} ms per bundle (mean of ${runs})`);
