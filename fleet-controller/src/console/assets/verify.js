// Verify a proof bundle in this browser: attest's verifier as WebAssembly
// (/console/verifier.wasm). This script only moves bytes: the bundle, the options the buyer
// pinned, and the answers of the JSON-RPC node the buyer named; the module judges them.
"use strict";

let modulePromise = null;

function loadVerifier() {
  if (!modulePromise) {
    modulePromise = fetch("/console/verifier.wasm")
      .then((r) => {
        if (!r.ok) throw new Error("the verifier module is not available here (" + r.status + ")");
        return r.arrayBuffer();
      })
      .then((bytes) => WebAssembly.instantiate(bytes, {}))
      .then((m) => m.instance.exports);
  }
  return modulePromise;
}

// Calls an exported function with byte arguments; returns its JSON answer.
function call(w, name, ...args) {
  const bufs = args.map((bytes) => {
    const ptr = w.hs_alloc(bytes.length);
    new Uint8Array(w.memory.buffer, ptr, bytes.length).set(bytes);
    return [ptr, bytes.length];
  });
  const packed = w[name](...bufs.flat());
  const ptr = Number(BigInt.asUintN(64, packed) >> 32n);
  const len = Number(BigInt.asUintN(64, packed) & 0xffffffffn);
  const text = new TextDecoder().decode(new Uint8Array(w.memory.buffer, ptr, len).slice());
  w.hs_free(ptr, len);
  for (const [p, l] of bufs) w.hs_free(p, l);
  return JSON.parse(text);
}

const enc = (s) => new TextEncoder().encode(s);

async function rpc(url, method, params) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const v = await r.json();
  if (v.error) throw new Error(method + ": " + JSON.stringify(v.error));
  return v.result;
}

function show(el, ok, lines) {
  el.replaceChildren();
  const h = document.createElement("h2");
  h.id = "verify-verdict";
  h.className = ok ? "verified" : "error";
  h.textContent = ok ? "Verified" : "Not verified";
  el.append(h);
  const ul = document.createElement("ul");
  for (const line of lines) {
    const li = document.createElement("li");
    li.textContent = line;
    ul.append(li);
  }
  el.append(ul);
}

async function bundleBytes() {
  const file = document.getElementById("bundle-file").files[0];
  if (file) return new Uint8Array(await file.arrayBuffer());
  const url = document.getElementById("bundle-url").value.trim();
  if (!url) throw new Error("choose a bundle file or give a bundle's path on this server");
  const r = await fetch(url);
  if (!r.ok) throw new Error("the bundle could not be fetched (" + r.status + "): " + (await r.text()));
  return new Uint8Array(await r.arrayBuffer());
}

async function verify(ev) {
  ev.preventDefault();
  const out = document.getElementById("verify-result");
  out.textContent = "Verifying…";
  try {
    const w = await loadVerifier();
    const bundle = await bundleBytes();
    const opts = { controller_key: document.getElementById("controller-key").value.trim(), now_ms: Date.now() };
    const chain = document.getElementById("chain-id").value.trim();
    const contract = document.getElementById("contract").value.trim();
    if (chain && contract) opts.evm = { chain_id: Number(chain), contract };
    const o = enc(JSON.stringify(opts));
    const v = call(w, "hs_verify", bundle, o);
    if (!v.ok) {
      show(out, false, [`${v.check}: ${v.error}`]);
      return;
    }
    const r = v.report;
    const s = r.statement;
    const lines = [
      `${r.evidence} signed messages checked, ${r.records} meter records`,
      `controller key ${opts.controller_key.slice(0, 16)}… signed the statement`,
      `${r.anchors.length} epoch anchor(s) checked offline`,
    ];
    if (s.job) {
      lines.push(`job energy ${(s.job.energy / 3.6e6).toFixed(3)} Wh, ${(s.job.co2e_mg / 1000).toFixed(3)} g CO2e`);
    }
    lines.push(`renewable share of the period ${(s.renewable_share_ppm / 1e4).toFixed(1)} %`);
    const rpcUrl = document.getElementById("rpc-url").value.trim();
    const asks = call(w, "hs_anchor_requests", bundle, o);
    let ok = true;
    if (asks.length && rpcUrl) {
      const answers = [];
      for (const a of asks) {
        const results = [];
        for (const q of a.requests) results.push(await rpc(rpcUrl, q.method, q.params));
        answers.push({ epoch: a.epoch, results });
      }
      for (const c of call(w, "hs_anchor_check", bundle, o, enc(JSON.stringify(answers)))) {
        ok = ok && c.ok;
        lines.push(c.ok ? `epoch ${c.epoch}: on chain, block ${c.block_number}` : `epoch ${c.epoch}: ${c.error}`);
      }
    } else if (asks.length) {
      lines.push(`${asks.length} anchor(s) on an EVM chain not checked on chain: name a node`);
    }
    show(out, ok, lines);
  } catch (e) {
    show(out, false, [String(e.message || e)]);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("verify-form").addEventListener("submit", verify);
});
