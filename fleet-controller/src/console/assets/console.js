// Heliostat console: live updates over server-sent events. Pages read fine without this
// file; it only keeps the fleet table and a job's page current.
"use strict";

function liveFleet(table) {
  const src = new EventSource(table.dataset.live);
  src.addEventListener("fleet", (ev) => {
    const data = JSON.parse(ev.data);
    const count = document.getElementById("online-count");
    if (count && typeof data.online === "number") count.textContent = data.online;
    for (const row of data.rows || []) {
      const tr = table.querySelector(`tr[data-device="${row.id}"]`);
      if (!tr) continue;
      for (const [col, text] of Object.entries(row.cells || {})) {
        const td = tr.querySelector(`td[data-col="${col}"]`);
        if (!td || td.textContent === text) continue;
        td.textContent = text;
        if (col === "online") td.className = row.online ? "online" : "offline";
        td.classList.remove("flash");
        void td.offsetWidth;
        td.classList.add("flash");
      }
    }
  });
}

function liveJob(facts) {
  // The browser resends the last event id when it reconnects; the server resumes there.
  const src = new EventSource(facts.dataset.live);
  const list = document.getElementById("job-events");
  const seen = new Set([...list.querySelectorAll("li")].map((li) => li.dataset.seq));
  src.addEventListener("job", (ev) => {
    const e = JSON.parse(ev.data);
    if (seen.has(String(e.seq))) return;
    seen.add(String(e.seq));
    const li = document.createElement("li");
    li.dataset.seq = e.seq;
    const when = document.createElement("time");
    when.textContent = new Date(e.at_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const badge = document.createElement("span");
    badge.className = "state " + e.state;
    badge.textContent = e.state;
    li.append(when, " ", badge, " ", e.reason || "");
    list.append(li);
    const state = facts.querySelector('[data-col="state"]');
    if (state) { state.className = "state " + e.state; state.textContent = e.state; }
  });
  src.addEventListener("progress", (ev) => {
    const p = JSON.parse(ev.data);
    const dd = facts.querySelector('dd[data-col="progress"]');
    if (!dd) return;
    const bar = document.createElement("progress");
    bar.max = p.chunks; bar.value = p.chunks_done;
    dd.replaceChildren(bar, ` ${p.chunks_done} of ${p.chunks} chunks` + (p.paused ? " (paused by the power governor)" : ""));
  });
  src.addEventListener("end", () => {
    src.close();
    // The final page has the results and the carbon statement.
    setTimeout(() => window.location.reload(), 500);
  });
}

function liveFlow(fig) {
  const src = new EventSource(fig.dataset.flow);
  const width = (w) => Math.min(14, 1.5 + Math.sqrt(Math.abs(w)) * 0.8).toFixed(1);
  src.addEventListener("flow", (ev) => {
    const f = JSON.parse(ev.data);
    const set = (leg, text) => {
      const el = fig.querySelector(`[data-flow-leg="${leg}"]`);
      if (el) el.textContent = text;
    };
    set("solar", `${f.solar.toFixed(0)} W`);
    set("load", `${f.load.toFixed(0)} W`);
    set("grid", `${f.grid.toFixed(0)} W`);
    set("battery", `${Math.abs(f.battery).toFixed(0)} W ${f.battery >= 0 ? "out" : "in"}`);
    if (f.soc !== null) set("soc", `${f.soc.toFixed(0)} %`);
    for (const [cls, w] of [["s-solar", f.solar], ["s-battery", f.battery], ["s-grid", f.grid], ["s-load", f.load]]) {
      const line = fig.querySelector(`line.${cls}`);
      if (line) line.setAttribute("stroke-width", width(w));
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (!window.EventSource) return;
  const flow = document.querySelector("figure.flow[data-flow]");
  if (flow) liveFlow(flow);
  const table = document.querySelector("table[data-live]");
  if (table) liveFleet(table);
  const facts = document.querySelector("#job-facts[data-live]");
  if (facts) liveJob(facts);
});
