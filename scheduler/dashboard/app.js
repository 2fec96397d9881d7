// Sandstorm scheduler dashboard. Plain JavaScript, no libraries: charts are hand-drawn SVG and
// canvas. Data comes from the scheduler's own HTTP port:
//   /api/stream     server-sent events: `decisions` (a batch every ~150 ms: the exact count and
//                   rate, a sample of decisions) and `cluster` (nodes and their cores, ~4/s)
//   /api/decisions/ID, /api/functions, /api/sim-report
// Rendering happens at most once per animation frame, however fast batches arrive.
"use strict";

(function () {
  const C = {
    storage: "#0072B2", compute: "#E69F00", warm: "#009E73", assembled: "#56B4E9",
    cold: "#D55E00", dead: "#CC79A7", muted: "#5b6475",
  };
  // Okabe-Ito, for series in the simulator charts (with dash patterns as a second cue).
  const SERIES = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
  const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4"];
  const MAX_ROWS = 200;         // decisions kept in the table
  const HEAT_COLUMNS = 120;     // heatmap history: 120 cluster updates (~30 s at 4/s)
  const RATE_SECONDS = 60;      // rate chart history

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const num = (x, d = 0) => (x == null || Number.isNaN(x)) ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  function us(x) {
    if (x == null || Number.isNaN(x)) return "–";
    if (x < 1000) return num(x, x < 10 ? 1 : 0) + " µs";
    if (x < 1e6) return num(x / 1000, x < 1e4 ? 2 : 1) + " ms";
    return num(x / 1e6, 2) + " s";
  }
  function bytes(x) {
    if (x == null || Number.isNaN(x)) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return num(x, i === 0 ? 0 : 1) + " " + u[i];
  }
  // Two significant digits at most, for axis ticks.
  const sig = (x) => (x == null || Number.isNaN(x)) ? "–" : Number(x.toPrecision(2)).toLocaleString("en-US");
  const pct = (x) => (x == null || Number.isNaN(x)) ? "–" : num(100 * x, 1) + "%";
  function clock(ms) {
    const d = new Date(ms);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }
  const tag = (kind, text) => `<span class="tag tag-${esc(kind)}">${esc(text == null ? kind : text)}</span>`;

  // ---- state and figures the test reads ----
  const stats = {
    batches: 0, decisions: 0, sampled: 0, renders: 0, renderMsTotal: 0, renderMsMax: 0,
    lastRenderMs: 0, lastRatePerS: 0, droppedBatches: 0, clusterUpdates: 0, frameGapMaxMs: 0,
  };
  const state = {
    filter: { tenant: "", function: "", tier: "", start: "" },
    paused: false, heldBack: 0,
    rows: [], rowsDirty: false, selected: null,
    rate: [],            // per second: {s, storage, compute}
    lastBatch: null, lastRateAt: 0,
    cluster: null, heat: new Map(),
    functions: null, report: null,
    es: null, dirty: false,
  };
  window.sandstormDashboard = { stats, state };

  // ---- the event stream ----
  function connect() {
    if (state.es) state.es.close();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filter)) if (v) q.set(k, v);
    const es = new EventSource("api/stream" + (q.toString() ? "?" + q : ""));
    state.es = es;
    setConn("wait", "connecting…");
    es.addEventListener("open", () => setConn("live", "live"));
    es.addEventListener("error", () => setConn(es.readyState === 2 ? "down" : "wait",
      es.readyState === 2 ? "disconnected" : "reconnecting…"));
    es.addEventListener("decisions", (e) => onBatch(JSON.parse(e.data)));
    es.addEventListener("cluster", (e) => onCluster(JSON.parse(e.data)));
  }
  function setConn(kind, text) {
    const el = $("conn");
    el.className = "conn conn-" + kind;
    el.textContent = text;
  }

  function onBatch(b) {
    stats.batches++;
    stats.decisions += b.matched;
    stats.sampled += b.sample.length;
    stats.lastRatePerS = b.rate_per_s;
    stats.droppedBatches = b.dropped_batches;
    state.lastBatch = b;
    // Rate history, per wall-clock second, from exact counts.
    const s = Math.floor(b.at_unix_ms / 1000);
    let last = state.rate[state.rate.length - 1];
    if (!last || last.s !== s) {
      last = { s, storage: 0, compute: 0, ms: 0 };
      state.rate.push(last);
      while (state.rate.length > RATE_SECONDS + 1) state.rate.shift();
    }
    last.storage += b.storage;
    last.compute += b.compute;
    last.ms += b.interval_ms;
    if (state.paused) {
      state.heldBack += b.sample.length;
    } else if (b.sample.length) {
      // Newest first; the table keeps MAX_ROWS.
      for (let i = b.sample.length - 1; i >= 0; i--) state.rows.unshift(b.sample[i]);
      if (state.rows.length > MAX_ROWS) state.rows.length = MAX_ROWS;
      state.rowsDirty = true;
    }
    schedule();
  }

  function onCluster(c) {
    stats.clusterUpdates++;
    state.cluster = c;
    for (const n of c.nodes) {
      let h = state.heat.get(n.name);
      if (!h) { h = []; state.heat.set(n.name, h); }
      h.push(n.alive ? n.per_core.map((k) => k.busy) : null);
      if (h.length > HEAT_COLUMNS) h.shift();
    }
    schedule();
  }

  // ---- rendering, once per frame ----
  function schedule() {
    if (state.dirty) return;
    state.dirty = true;
    requestAnimationFrame(render);
  }
  function render() {
    state.dirty = false;
    const t0 = performance.now();
    renderRateLine();
    renderRateChart();
    if (state.rowsDirty) { renderRows(); state.rowsDirty = false; }
    if (state.cluster) renderCluster();
    const dt = performance.now() - t0;
    stats.renders++;
    stats.renderMsTotal += dt;
    stats.renderMsMax = Math.max(stats.renderMsMax, dt);
    stats.lastRenderMs = dt;
    $("perf").textContent = `page update ${num(dt, 1)} ms (mean ${num(stats.renderMsTotal / stats.renders, 1)} ms, max ${num(stats.renderMsMax, 1)} ms over ${num(stats.renders)} updates)`;
  }

  function renderRateLine() {
    const b = state.lastBatch;
    if (!b) return;
    const filtered = Object.values(state.filter).some((v) => v);
    const parts = [
      `<b>${num(b.rate_per_s)}</b> decisions/s (true rate, every decision counted)`,
    ];
    if (filtered) parts.push(`<b>${num(b.matched_rate_per_s)}</b>/s match the filter`);
    parts.push(`showing a sample of ${num(b.sample.length)} of ${num(b.matched)} in the last ${num(b.interval_ms)} ms`);
    parts.push(`${num(b.total)} since start`);
    if (b.dropped_batches) parts.push(`<span class="warn">${num(b.dropped_batches)} batches dropped: this browser read too slowly</span>`);
    if (state.paused) parts.push(`<span class="warn">paused: ${num(state.heldBack)} sampled decisions not shown</span>`);
    $("rate-line").innerHTML = parts.join(" · ");
    $("rate-top").textContent = `${num(b.rate_per_s)} decisions/s`;
  }

  function renderRateChart() {
    const cv = $("rate-chart");
    const w = cv.clientWidth || 600, h = 90;
    if (cv.width !== w) cv.width = w;
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const now = Math.floor(Date.now() / 1000);
    const series = state.rate.filter((r) => r.s > now - RATE_SECONDS && r.s < now);
    const perS = (r, k) => r.ms > 0 ? r[k] * 1000 / r.ms : 0;
    let max = 1;
    for (const r of series) max = Math.max(max, perS(r, "storage") + perS(r, "compute"));
    const top = niceCeil(max);
    const left = 64, plotW = w - left - 4, plotH = h - 16;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = C.muted;
    ctx.strokeStyle = "#d9dde5";
    ctx.textAlign = "right";
    for (const f of [0, 0.5, 1]) {
      const y = 2 + plotH * (1 - f);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(sig(top * f) + "/s", left - 4, y + 4);
    }
    const bw = plotW / RATE_SECONDS;
    for (const r of series) {
      const x = left + (RATE_SECONDS - (now - r.s)) * bw;
      const hs = plotH * perS(r, "storage") / top, hc = plotH * perS(r, "compute") / top;
      ctx.fillStyle = C.storage;
      ctx.fillRect(x, 2 + plotH - hs, Math.max(1, bw - 1), hs);
      ctx.fillStyle = C.compute;
      ctx.fillRect(x, 2 + plotH - hs - hc, Math.max(1, bw - 1), hc);
    }
    ctx.fillStyle = C.muted;
    ctx.textAlign = "left";
    ctx.fillText("−60 s", left, h - 2);
    ctx.textAlign = "right";
    ctx.fillText("now", w - 2, h - 2);
  }

  function niceCeil(x) {
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (x <= m * p) return m * p;
    return 10 * p;
  }

  function renderRows() {
    const html = [];
    for (const d of state.rows) {
      const sel = state.selected === d.id ? " selected" : "";
      html.push(`<tr class="decision-row${sel}" data-id="${d.id}"><td>${clock(d.at_unix_ms)}</td><td>${esc(d.tenant)}</td>` +
        `<td>${esc(d.function)}</td><td>${esc(d.node)}</td><td>${tag(d.tier)}</td><td>${tag(d.start)}</td>` +
        `<td class="num">${num(d.estimated_us)}</td><td class="num">${d.measured_us == null ? "not run" : num(d.measured_us)}</td></tr>`);
    }
    $("decision-rows").innerHTML = html.join("");
  }

  // ---- one decision's detail ----
  const TERMS = [
    ["queue_us", "queue", "#999999"], ["dispatch_us", "dispatch", "#CC79A7"], ["start_us", "start", C.assembled],
    ["compute_us", "compute", C.warm], ["local_access_us", "local access", "#F0E442"],
    ["network_rtt_us", "network RTT", C.cold], ["bytes_us", "bytes on the wire", "#000000"],
  ];
  async function showDetail(id) {
    state.selected = id;
    renderRows();
    const el = $("detail");
    el.hidden = false;
    el.innerHTML = `loading decision ${esc(id)}…`;
    let r;
    try {
      r = await fetch("api/decisions/" + encodeURIComponent(id));
    } catch (e) {
      el.innerHTML = `could not reach the scheduler: ${esc(e.message)}`;
      return;
    }
    const body = await r.json();
    if (!r.ok) { el.innerHTML = esc(body.error || r.statusText); return; }
    el.innerHTML = detailHtml(body);
  }
  function detailHtml(d) {
    const facts = [
      `<span><b>${esc(d.function)}</b> of ${esc(d.tenant)}, invocation ${esc(d.id)}</span>`,
      `<span>ran on <b>${esc(d.node)}</b> ${tag(d.tier)} ${tag(d.start)}</span>`,
      `<span>policy ${esc(d.policy)}</span>`,
      `<span>estimated ${us(d.estimated_us)} · measured ${d.measured_us == null ? "not run" : us(d.measured_us)}</span>`,
    ];
    if (d.measured_us != null) {
      facts.push(`<span>at the node: queue ${us(d.queue_us)}, start ${us(d.start_us)}, run ${us(d.exec_us)}, durable ${us(d.durable_us)}</span>`);
      facts.push(`<span>placement ${us(d.schedule_us)} · ${num(d.data_calls)} data calls · read ${bytes(d.bytes_read)}, wrote ${bytes(d.bytes_written)}, moved ${bytes(d.bytes_moved)}</span>`);
    }
    if (d.unscored) facts.push(`<span>${num(d.unscored)} nodes not scored (sampled out or pruned)</span>`);
    for (const f of d.failed_attempts) facts.push(`<span class="warn">failed first on ${esc(f.node)}: ${esc(f.error)}</span>`);
    const rows = d.candidates.map((c) => `<tr class="cand-row"><td>${esc(c.node)}</td><td>${tag(c.tier)}</td><td>${tag(c.start)}</td>` +
      `<td>${tag(c.verdict)}</td><td class="num">${num(c.score, 2)}</td><td class="num">${num(c.estimated_us, 1)}</td>` +
      TERMS.map(([k]) => `<td class="num">${num(c[k], 1)}</td>`).join("") +
      `<td class="num">${num(c.storage_cpu_us, 1)}</td><td class="num">${num(c.compute_cpu_us, 1)}</td><td class="num">${bytes(c.bytes_moved)}</td></tr>`).join("");
    const why = d.candidates.map((c) => `<li>${tag(c.verdict)} <b>${esc(c.node)}</b>: ${c.verdict === "chosen" ? "chosen: the lowest score" : esc(c.reason)}</li>`).join("");
    return `<h3>Decision ${esc(d.id)}: cost breakdown of every candidate</h3><div class="facts">${facts.join("")}</div>` +
      costBars(d.candidates) +
      `<div class="table-wrap"><table class="data cost-table"><thead><tr><th>node</th><th>tier</th><th>start</th><th>verdict</th>` +
      `<th class="num" title="The policy's score: lower wins">score</th><th class="num">latency est. µs</th>` +
      TERMS.map(([, n]) => `<th class="num">${esc(n)} µs</th>`).join("") +
      `<th class="num">storage CPU µs</th><th class="num">compute CPU µs</th><th class="num">bytes moved</th></tr></thead>` +
      `<tbody>${rows}</tbody></table></div><h3>Why each candidate won, lost or was rejected</h3><ul class="reasons">${why}</ul>`;
  }
  function costBars(cands) {
    const w = 640, row = 20, left = 120, h = cands.length * row + 34;
    const max = Math.max(1, ...cands.map((c) => c.estimated_us));
    const sc = (w - left - 70) / max;
    let s = `<svg width="100%" viewBox="0 0 ${w} ${h}" role="img" aria-label="Latency estimate of each candidate, term by term">`;
    cands.forEach((c, i) => {
      const y = 4 + i * row;
      s += `<text x="${left - 6}" y="${y + 13}" text-anchor="end">${esc(c.node)} (${esc(c.verdict)})</text>`;
      let x = left;
      for (const [k, name, col] of TERMS) {
        const v = c[k] || 0, bw = v * sc;
        if (bw <= 0) continue;
        s += `<rect x="${x}" y="${y}" width="${bw}" height="${row - 6}" fill="${col}"><title>${esc(name)}: ${us(v)}</title></rect>`;
        x += bw;
      }
      s += `<text x="${x + 4}" y="${y + 13}">${us(c.estimated_us)}</text>`;
    });
    let lx = 4;
    const ly = cands.length * row + 14;
    for (const [, name, col] of TERMS) {
      s += `<rect x="${lx}" y="${ly}" width="10" height="10" fill="${col}"/><text x="${lx + 13}" y="${ly + 9}">${esc(name)}</text>`;
      lx += 22 + name.length * 6.6;
    }
    return s + "</svg>";
  }

  // ---- cluster ----
  function renderCluster() {
    const c = state.cluster;
    const alive = c.nodes.filter((n) => n.alive).length;
    $("cluster-summary").innerHTML = c.source === "bench"
      ? `<b>bench</b>: decisions come from <code>sandstorm bench dashboard</code> (the placement core on a simulated view; nothing runs), so there are no live nodes.`
      : `<b>${alive}</b> of ${c.nodes.length} nodes alive · ${num(c.tenants)} tenants · ${num(c.functions)} functions · policy <b>${esc(c.policy)}</b>`;
    $("policy-top").textContent = c.policy ? "policy " + c.policy : "bench";
    const box = $("nodes");
    const seen = new Set();
    for (const n of c.nodes) {
      seen.add(n.name);
      let card = box.querySelector(`.node-card[data-node="${CSS.escape(n.name)}"]`);
      if (!card) {
        card = document.createElement("div");
        card.className = "node-card";
        card.dataset.node = n.name;
        card.innerHTML = `<div class="node-head"></div><div class="node-facts"></div><canvas class="heat" aria-label="per-core busy heatmap"></canvas><div class="pools"></div>`;
        box.appendChild(card);
      }
      card.classList.toggle("dead", !n.alive);
      card.querySelector(".node-head").innerHTML =
        `<span class="name">${esc(n.name)}</span>${tag(n.role)}${n.alive ? tag("alive") : tag("dead", `dead (silent ${num(n.silent_ms / 1000, 1)} s)`)}` +
        `<span class="addr">${esc(n.address)} · ${num(n.cores)} cores</span>`;
      const facts = [
        `<span>busy <b>${pct(n.busy)}</b></span>`,
        `<span>run queues <b>${num(n.queue_len)}</b> waiting</span>`,
        `<span>placed, running <b>${num(n.load)}</b></span>`,
        `<span>functions <b>${num(n.functions)}</b></span>`,
      ];
      if (n.role === "storage") facts.push(`<span>holds <b>${num(n.keys)}</b> keys, <b>${bytes(n.bytes)}</b></span>`);
      if (n.role === "compute") facts.push(`<span>warm containers <b>${num(n.warm_containers)}</b></span>`);
      const q = n.per_core.map((k) => k.queue_len);
      if (q.length) facts.push(`<span title="per core">queue per core ${q.join(" ")}</span>`);
      card.querySelector(".node-facts").innerHTML = facts.join("");
      card.querySelector(".pools").innerHTML = n.pools.map((p) =>
        `<span>${esc(p.part)} pool ${num(p.ready)}/${num(p.target)} ready<span class="pool-bar"><i style="width:${p.target ? Math.min(100, 100 * p.ready / p.target) : 0}%"></i></span></span>`).join("");
      drawHeat(card.querySelector(".heat"), state.heat.get(n.name) || [], n.cores);
    }
    for (const card of [...box.children]) if (!seen.has(card.dataset.node)) card.remove();
    const pb = $("params").querySelector("tbody");
    pb.innerHTML = c.params.map((p) => `<tr><td>${esc(p.node ? p.node + ": " + p.name : p.name)}</td><td class="num">${num(p.micros, 2)}</td><td class="num">${p.samples ? num(p.samples) : "default"}</td></tr>`).join("");
  }

  // Viridis, 9 stops: perceptually even and readable with colour-blindness.
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  function viridis(f) {
    f = Math.min(1, Math.max(0, f)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(f)), t = f - i;
    return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * t));
  }
  function drawHeat(cv, history, cores) {
    const rows = Math.max(1, cores);
    if (cv.width !== HEAT_COLUMNS || cv.height !== rows) { cv.width = HEAT_COLUMNS; cv.height = rows; }
    cv.style.height = Math.min(160, Math.max(14, rows * 10)) + "px";
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(HEAT_COLUMNS, rows);
    const offset = HEAT_COLUMNS - history.length;
    for (let x = 0; x < HEAT_COLUMNS; x++) {
      const col = x >= offset ? history[x - offset] : undefined;
      for (let y = 0; y < rows; y++) {
        const i = 4 * (y * HEAT_COLUMNS + x);
        let rgb;
        if (col === undefined) rgb = [238, 240, 244];           // no sample yet
        else if (col === null) rgb = [204, 121, 167];           // node dead
        else rgb = viridis(col[y] == null ? 0 : col[y]);
        img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    cv.title = history.length && history[history.length - 1]
      ? "now: " + history[history.length - 1].map((b, i) => `core ${i} ${Math.round(100 * b)}%`).join(", ")
      : "no statistics yet";
  }
  function drawLegend() {
    const cv = $("heat-legend"), ctx = cv.getContext("2d");
    for (let x = 0; x < cv.width; x++) {
      const [r, g, b] = viridis(x / (cv.width - 1));
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(x, 0, 1, cv.height);
    }
  }

  // ---- functions ----
  async function pollFunctions() {
    try {
      const r = await fetch("api/functions");
      if (r.ok) { state.functions = await r.json(); renderFunctions(); }
    } catch (e) { /* the stream's status shows the connection */ }
  }
  function renderFunctions() {
    const f = state.functions;
    const tenants = new Set(), names = new Set();
    for (const x of f.functions) { tenants.add(x.tenant); names.add(x.name); }
    fillSelect($("f-tenant"), tenants);
    fillSelect($("f-function"), names);
    if (!f.functions.length) {
      $("function-rows").innerHTML = `<tr><td colspan="10">no functions deployed yet</td></tr>`;
      return;
    }
    $("function-rows").innerHTML = f.functions.map((x) => {
      const p = x.profile;
      const prof = p ? [
        `<td class="num">${num(p.invocations)}</td>`,
        `<td class="num">${us(p.duration_p50_us)} / ${us(p.duration_p90_us)} / ${us(p.duration_p99_us)}</td>`,
        `<td class="num">${us(p.cpu_p50_us)} / ${us(p.cpu_p90_us)} / ${us(p.cpu_p99_us)}</td>`,
        `<td class="num">${num(p.mean_accesses, 1)} (${num(p.mean_rounds, 1)})</td>`,
        `<td class="num">${bytes(p.mean_bytes)}</td>`,
        `<td class="num">${num(p.arrival_rate_per_s, 1)}</td>`,
      ].join("") : `<td class="num">0</td><td colspan="5" class="plan-none">not invoked yet</td>`;
      return `<tr class="function-row" data-function="${esc(x.name)}"><td><b>${esc(x.name)}</b> <span class="hint">${esc(x.tenant)}</span></td>${prof}` +
        `<td class="num" title="${num(x.cold_starts)} of ${num(x.decisions)} decisions">${x.decisions ? pct(x.cold_start_ratio) : "–"}</td>` +
        `<td>${mixChart(x.series, f.bucket_s)}</td><td>${planHtml(x.plan)}</td></tr>`;
    }).join("");
  }
  function fillSelect(sel, values) {
    const have = new Set([...sel.options].map((o) => o.value));
    for (const v of [...values].sort()) {
      if (!have.has(v)) { const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); }
    }
  }
  function mixChart(buckets, bucketS) {
    const w = 240, h = 46, n = 120, bw = w / n;
    const now = Math.floor(Date.now() / 1000);
    const max = Math.max(1, ...buckets.map((b) => b.storage + b.compute));
    let s = `<svg class="mix" width="${w}" height="${h + 8}" viewBox="0 0 ${w} ${h + 8}" role="img" aria-label="tier mix over the last 10 minutes">`;
    s += `<line x1="0" y1="${h}" x2="${w}" y2="${h}" stroke="#d9dde5"/>`;
    for (const b of buckets) {
      const age = Math.floor((now - b.at_unix_s) / bucketS);
      if (age >= n || age < 0) continue;
      const x = w - (age + 1) * bw;
      const hs = h * b.storage / max, hc = h * b.compute / max;
      s += `<rect x="${x}" y="${h - hs}" width="${bw}" height="${hs}" fill="${C.storage}"/>`;
      s += `<rect x="${x}" y="${h - hs - hc}" width="${bw}" height="${hc}" fill="${C.compute}"/>`;
      if (b.cold_starts) s += `<rect x="${x}" y="${h + 2}" width="${bw}" height="5" fill="${C.cold}"/>`;
      s += `<rect x="${x}" y="0" width="${bw}" height="${h}" fill="transparent"><title>${new Date(b.at_unix_s * 1000).toLocaleTimeString()}: storage ${b.storage}, compute ${b.compute} (warm ${b.warm}, assembled ${b.assembled}, cold ${b.cold}; ${b.cold_starts} compute starts not warm)</title></rect>`;
    }
    return s + `<text x="0" y="10" font-size="9" fill="${C.muted}">max ${num(max)} / ${bucketS} s</text></svg>`;
  }
  function planHtml(p) {
    if (!p) return `<span class="plan-none" title="The re-provisioner has not made a plan for this function">no plan yet</span>`;
    const list = (xs, unit) => xs.length ? xs.map(([k, v]) => `${esc(k)}: ${num(v)} ${unit}`).join(", ") : "none";
    return `dedicated storage cores: ${list(p.dedicated_storage_cores, "cores")}<br>warm containers: ${list(p.warm_containers, "")}` +
      `<br>pools: ${list(p.pool_sizes, "")}<br><span class="hint">${esc(p.note)} (${new Date(p.at_unix_ms).toLocaleTimeString()})</span>`;
  }

  // ---- simulator report ----
  function loadReportText(text, name) {
    let r;
    try { r = JSON.parse(text); } catch (e) { simStatus(`${name}: not JSON (${e.message})`); return; }
    if (typeof r !== "object" || r === null || !Array.isArray(r.runs) || typeof r.schema_version !== "number") {
      simStatus(`${name}: not a sandstorm sim report (no schema_version and runs)`); return;
    }
    if (r.schema_version > 1) { simStatus(`${name}: schema version ${r.schema_version} is newer than this page reads (1)`); return; }
    state.report = r;
    simStatus(`${name}: scenario ${r.scenario}, seed ${r.seed}, ${r.runs.length} runs`);
    renderReport();
  }
  function simStatus(t) { $("sim-status").textContent = t; }
  const runKey = (r) => `${r.policy} · ${r.keep_alive}`;
  function renderReport() {
    const r = state.report;
    const out = $("sim-out");
    if (!r.runs.length) { out.innerHTML = "<p>The report has no runs.</p>"; return; }
    const groups = new Map();
    for (const run of r.runs) {
      if (!groups.has(runKey(run))) groups.set(runKey(run), []);
      groups.get(runKey(run)).push(run);
    }
    const series = [...groups.entries()].map(([name, runs], i) => ({ name, runs: runs.sort((a, b) => a.load - b.load), i }));
    const loads = [...new Set(r.runs.map((x) => x.load))].sort((a, b) => a - b);
    const at = loads.reduce((best, l) => Math.abs(l - 1) < Math.abs(best - 1) ? l : best, loads[0]);
    const atRuns = r.runs.filter((x) => x.load === at);
    let html = `<p><b>${esc(r.scenario)}</b> ${esc(r.description || "")} · trace ${esc(r.trace.format)}: ${num(r.trace.functions)} functions, ${num(r.trace.invocations)} invocations over ${num(r.trace.span_s)} s · seed ${esc(r.seed)}</p>`;
    html += `<div class="sim-grid">`;
    html += `<figure>${lineChart(series, "latency_p50", "latency p50 against load", (x) => x.latency_us.p50, us)}</figure>`;
    html += `<figure>${lineChart(series, "latency_p99", "latency p99 against load", (x) => x.latency_us.p99, us)}</figure>`;
    html += `<figure>${lineChart(series, "goodput", "goodput (invocations/s meeting the objective) against load", (x) => x.goodput_per_s, (v) => sig(v) + "/s")}</figure>`;
    html += `<figure>${barChart(atRuns, `compute-node starts at load ${at}× (per cent of invocations)`,
      [["cold", (x) => x.starts.cold / x.invocations, C.cold], ["assembled", (x) => x.starts.assembled / x.invocations, C.assembled], ["warm", (x) => x.starts.warm / x.invocations, C.warm]])}</figure>`;
    html += `<figure>${barChart(atRuns, `tier split at load ${at}× (per cent of invocations)`,
      [["storage", (x) => x.tiers.storage / Math.max(1, x.tiers.storage + x.tiers.compute), C.storage], ["compute", (x) => x.tiers.compute / Math.max(1, x.tiers.storage + x.tiers.compute), C.compute]])}</figure>`;
    html += `<figure id="side-by-side">${sideBySide(atRuns, at)}</figure>`;
    html += `</div>`;
    if (r.peer && r.peer.length) {
      html += `<h3>Cold starts beside ${esc(r.peer[0].peer)}</h3><table class="data"><thead><tr><th>keep-alive</th><th class="num">ours</th><th class="num">peer</th><th class="num">difference</th></tr></thead><tbody>` +
        r.peer.map((p) => `<tr><td>${esc(p.keep_alive)}</td><td class="num">${num(p.cold_starts)}</td><td class="num">${num(p.peer_cold_starts)}</td><td class="num">${p.difference == null ? "–" : (p.difference >= 0 ? "+" : "") + num(100 * p.difference, 1) + "%"}</td></tr>`).join("") + `</tbody></table>`;
    }
    out.innerHTML = html;
  }
  function legend(series, y) {
    let s = "", x = 50;
    for (const se of series) {
      const col = SERIES[se.i % SERIES.length], dash = DASHES[se.i % DASHES.length];
      s += `<line x1="${x}" y1="${y}" x2="${x + 18}" y2="${y}" stroke="${col}" stroke-width="2" stroke-dasharray="${dash}"/><text x="${x + 22}" y="${y + 4}">${esc(se.name)}</text>`;
      x += 30 + se.name.length * 6;
    }
    return s;
  }
  function lineChart(series, id, title, value, fmt) {
    const w = 420, h = 230, l = 64, r = 10, t = 24, b = 56;
    const pts = series.flatMap((s) => s.runs.map((x) => [x.load, value(x)])).filter(([, v]) => v != null && !Number.isNaN(v));
    if (!pts.length) return `<p>${esc(title)}: no data</p>`;
    const xs = pts.map((p) => p[0]), vs = pts.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const vmin = Math.min(...vs), vmax = Math.max(...vs);
    const log = vmin > 0 && vmax / vmin > 50;
    const f = (v) => log ? Math.log10(v) : v;
    const lo = log ? Math.floor(f(vmin)) : 0, hi = log ? Math.ceil(f(vmax)) : niceCeil(Math.max(vmax, 1e-9));
    const X = (v) => x1 === x0 ? l + (w - l - r) / 2 : l + (w - l - r) * (v - x0) / (x1 - x0);
    const Y = (v) => t + (h - t - b) * (1 - (f(v) - lo) / Math.max(1e-9, hi - lo));
    let s = `<svg id="chart-${id}" width="100%" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}"><text x="4" y="14" font-weight="600">${esc(title)}${log ? " (log scale)" : ""}</text>`;
    const ticks = log ? Array.from({ length: hi - lo + 1 }, (_, i) => Math.pow(10, lo + i)) : [0, hi / 2, hi];
    for (const v of ticks) {
      s += `<line class="grid" x1="${l}" x2="${w - r}" y1="${Y(v)}" y2="${Y(v)}"/><text x="${l - 4}" y="${Y(v) + 4}" text-anchor="end">${esc(fmt(v))}</text>`;
    }
    for (const v of [...new Set(xs)]) s += `<text x="${X(v)}" y="${h - b + 14}" text-anchor="middle">${num(v, 2)}×</text>`;
    s += `<line class="axis" x1="${l}" x2="${w - r}" y1="${h - b}" y2="${h - b}"/><text x="${(l + w) / 2}" y="${h - b + 28}" text-anchor="middle">load (× the trace's rate)</text>`;
    for (const se of series) {
      const col = SERIES[se.i % SERIES.length], dash = DASHES[se.i % DASHES.length];
      const p = se.runs.filter((x) => value(x) != null && !Number.isNaN(value(x)));
      if (p.length > 1) s += `<polyline fill="none" stroke="${col}" stroke-width="2" stroke-dasharray="${dash}" points="${p.map((x) => `${X(x.load)},${Y(value(x))}`).join(" ")}"/>`;
      for (const x of p) s += `<circle cx="${X(x.load)}" cy="${Y(value(x))}" r="3" fill="${col}"><title>${esc(se.name)} at ${x.load}×: ${esc(fmt(value(x)))}</title></circle>`;
    }
    return s + legend(series, h - 10) + "</svg>";
  }
  function barChart(runs, title, parts) {
    const row = 22, l = 190, w = 420, h = 30 + runs.length * row + 24;
    let s = `<svg width="100%" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}"><text x="4" y="14" font-weight="600">${esc(title)}</text>`;
    runs.forEach((x, i) => {
      const y = 24 + i * row;
      s += `<text x="${l - 6}" y="${y + 12}" text-anchor="end">${esc(runKey(x))}</text>`;
      let at = l;
      for (const [name, fn, col] of parts) {
        const v = x.invocations ? fn(x) : 0, bw = (w - l - 40) * (Number.isFinite(v) ? v : 0);
        s += `<rect x="${at}" y="${y}" width="${Math.max(0, bw)}" height="${row - 6}" fill="${col}"><title>${esc(name)}: ${pct(v)}</title></rect>`;
        at += Math.max(0, bw);
      }
    });
    let lx = l;
    const ly = h - 12;
    for (const [name, , col] of parts) { s += `<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${col}"/><text x="${lx + 13}" y="${ly}">${esc(name)}</text>`; lx += 24 + name.length * 7; }
    return s + "</svg>";
  }
  // What the simulator predicts beside what the live cluster does now.
  function sideBySide(runs, at) {
    const policy = state.cluster && state.cluster.policy;
    const run = runs.find((x) => x.policy === policy) || runs[0];
    const recent = state.rate.slice(-30);
    const st = recent.reduce((a, r) => a + r.storage, 0), co = recent.reduce((a, r) => a + r.compute, 0);
    const fns = (state.functions && state.functions.functions) || [];
    const dec = fns.reduce((a, f) => a + f.decisions, 0), cold = fns.reduce((a, f) => a + f.cold_starts, 0);
    const measured = state.rows.map((d) => d.measured_us).filter((v) => v != null).sort((a, b) => a - b);
    const median = measured.length ? measured[Math.floor(measured.length / 2)] : null;
    const simShare = run.tiers.storage / Math.max(1, run.tiers.storage + run.tiers.compute);
    const cells = [
      ["", `simulator: ${runKey(run)} at ${at}×`, `live cluster${policy ? " (" + policy + ")" : ""}`],
      ["share run in storage", pct(simShare), st + co ? pct(st / (st + co)) : "no decisions yet"],
      ["cold-start rate", pct(run.cold_starts / Math.max(1, run.invocations)), dec ? pct(cold / dec) : "no decisions yet"],
      ["latency p50", us(run.latency_us.p50), median == null ? "no measured decisions" : us(median) + " (recent sample)"],
    ];
    return `<div><b>Predicted beside live</b></div><div class="side">` +
      cells.map((c, i) => c.map((v) => `<div class="${i === 0 ? "h" : ""}">${esc(v)}</div>`).join("")).join("") + `</div>`;
  }

  // ---- controls ----
  for (const k of ["tenant", "function", "tier", "start"]) {
    $("f-" + k).addEventListener("change", (e) => {
      state.filter[k] = e.target.value;
      state.rows = [];
      state.rate = [];
      state.selected = null;
      state.rowsDirty = true;
      connect();
    });
  }
  $("pause").addEventListener("click", (e) => {
    state.paused = !state.paused;
    e.target.setAttribute("aria-pressed", String(state.paused));
    e.target.textContent = state.paused ? "Resume" : "Pause";
    state.heldBack = 0;
    schedule();
  });
  $("decision-rows").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (tr) showDetail(tr.dataset.id);
  });
  $("sim-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    file.text().then((t) => loadReportText(t, file.name), (err) => simStatus(`${file.name}: ${err.message}`));
  });
  $("sim-server").addEventListener("click", async () => {
    const r = await fetch("api/sim-report");
    const text = await r.text();
    if (!r.ok) {
      let msg = text;
      try { msg = JSON.parse(text).error; } catch (e) { /* keep the text */ }
      simStatus(msg);
      return;
    }
    loadReportText(text, r.headers.get("x-report-name") || "the scheduler's report");
  });
  // Longest gap between animation frames: how responsive the page stayed.
  let lastFrame = performance.now();
  function frame(t) {
    stats.frameGapMaxMs = Math.max(stats.frameGapMaxMs, t - lastFrame);
    lastFrame = t;
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  drawLegend();
  connect();
  pollFunctions();
  setInterval(pollFunctions, 2000);
  // The live half of "predicted beside live" moves on.
  setInterval(() => {
    const el = $("side-by-side");
    if (!state.report || !state.report.runs.length || !el) return;
    const loads = state.report.runs.map((x) => x.load);
    const at = loads.reduce((best, l) => Math.abs(l - 1) < Math.abs(best - 1) ? l : best, loads[0]);
    el.innerHTML = sideBySide(state.report.runs.filter((x) => x.load === at), at);
  }, 2000);
})();
