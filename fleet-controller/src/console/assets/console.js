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

document.addEventListener("DOMContentLoaded", () => {
  if (!window.EventSource) return;
  const table = document.querySelector("table[data-live]");
  if (table) liveFleet(table);
  const facts = document.querySelector("#job-facts[data-live]");
  if (facts) liveJob(facts);
});
