// The admin panel's one script: fills each page from the /v2 admin API and refreshes it live.
// Every action is a call of that API; with a session it carries the session's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const page = document.body.dataset.page;
const mayAct = document.body.dataset.role === "admin";
const REFRESH_MS = 5000;

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { window.location.assign("/admin/login"); throw new Error("logged out"); }
  const text = await response.text();
  const doc = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(doc.error || `${method} ${path}: HTTP ${response.status}`);
  return doc;
}

let holdUntil = 0;  // what an action said stays up a while before "Updated ..." comes back

function say(text, error, hold) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
  if (hold) holdUntil = Date.now() + 10000;
}

function set(field, text) {
  for (const node of document.querySelectorAll(`[data-field="${field}"]`)) node.textContent = text;
}

function last(series) {
  for (let i = (series || []).length - 1; i >= 0; i--) if (series[i] !== null) return series[i];
  return null;
}

function sum(values) { return values.reduce((a, b) => a + (b || 0), 0); }

function fixed(value, digits) { return value === null || value === undefined ? "–" : Number(value).toFixed(digits); }

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(1)} ${units[i]}`;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600), m = Math.floor(seconds % 3600 / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}

function chart(svg, values) {
  const width = 300, height = 80;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null);
  svg.replaceChildren();
  if (points.length < 2) return;
  const max = Math.max(...points.map(([, v]) => v), 1e-9);
  const n = values.length - 1 || 1;
  const path = points.map(([i, v], k) =>
    `${k ? "L" : "M"}${(i / n * width).toFixed(1)},${(height - v / max * (height - 4)).toFixed(1)}`).join("");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
  line.setAttribute("d", path);
  svg.appendChild(line);
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "12");
  label.textContent = `max ${max.toFixed(max < 10 ? 2 : 0)}`;
  svg.appendChild(label);
}

async function overview() {
  const [ready, meta, index, history, device, update, units] = await Promise.all([
    fetch("/v2/health/ready").then(r => r.ok),
    api("GET", "/v2"),
    api("POST", "/v2/repository/index", {}),
    api("GET", "/v2/history"),
    api("GET", "/v2/device").catch(() => null),
    api("GET", "/v2/update").catch(() => null),
    api("GET", "/v2/units").catch(error => ({ units: [], error: error.message })),
  ]);
  set("health", ready ? "Ready" : "Not ready");
  set("models", `${index.filter(r => r.state === "READY").length} of ${index.length}`);
  set("version", meta.version);
  const models = Object.values(history.models || {});
  const total = key => history.time.map((_, i) => sum(models.map(m => (m[key] || [])[i])));
  const worst = key => history.time.map((_, i) => Math.max(...models.map(m => (m[key] || [])[i] || 0), 0));
  const rates = total("request_rate"), errors = total("error_rate"), p99 = worst("p99_ms");
  set("request_rate", fixed(last(rates), 1));
  set("error_rate", fixed(last(errors), 2));
  set("p99_ms", fixed(last(p99), 1));
  const dev = history.device || {};
  // the live sample where telemetry is on; the history's last point otherwise
  const live = device || {};
  const temps = (live.thermal || []).map(z => z.celsius);
  const load = live.gpu && live.gpu.load !== null ? live.gpu.load : last(dev.gpu_load || []);
  set("gpu_load", load === null || load === undefined ? "–" : `${(load * 100).toFixed(0)} %`);
  set("temperature_c", fixed(temps.length ? Math.max(...temps) : last(dev.temperature_c || []), 1));
  set("board_power_w", fixed(live.board_power_watts ?? last(dev.board_power_w || []), 1));
  set("memory", bytes(live.memory ? live.memory.total_bytes - live.memory.available_bytes
    : last(dev.memory_used_bytes || [])));
  set("power_mode", device && device.power_mode ? device.power_mode.name || String(device.power_mode.id) : "–");
  set("uptime", device && typeof device.uptime_s === "number" ? duration(device.uptime_s) : "–");
  set("slot", update && update.boot ? update.boot.slot.toUpperCase() : "–");
  const series = { request_rate: rates, p99_ms: p99, gpu_load: dev.gpu_load || [] };
  for (const svg of document.querySelectorAll("svg[data-chart]")) chart(svg, series[svg.dataset.chart] || []);
  const problem = document.getElementById("units-error");
  problem.textContent = units.error;
  problem.hidden = !units.error;
  fillRows(document.querySelector("#units tbody"), units.units.map(u => {
    const state = u.sub ? `${u.active} (${u.sub})` : u.active;
    const what = u.load === "not-found" ? "not in this image" : [u.description, u.result && u.result !== "success"
      ? `last result: ${u.result}` : "", u.enabled ? `${u.enabled} at boot` : ""].filter(Boolean).join(" · ");
    return [[u.name, state, u.since ? when(u.since) : "–", u.restarts ?? "–", bytes(u.memory_bytes), what],
      { "data-unit": u.name, "data-active": u.active }];
  }));
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = label;
  b.addEventListener("click", action);
  return b;
}

async function act(question, method, path, done, body) {
  if (!window.confirm(question)) return;
  try {
    await api(method, path, body === undefined ? {} : body);
    say(done, false, true);
  } catch (error) {
    say(error.message, true, true);
  }
  refresh();
}

let shownModels = "";
const configs = {};  // model -> {backend, instances}, read again at every refresh (a reload may change them)

async function modelConfig(name) {
  try {
    const config = await api("GET", `/v2/models/${encodeURIComponent(name)}/config`);
    const instances = (config.instance_group || []).reduce((n, g) => n + (g.count || 1), 0) || 1;
    return { backend: config.backend || config.platform || "–", instances };
  } catch (error) {
    return { backend: "–", instances: "–" };  // not loaded: no config to read
  }
}

async function models() {
  await Promise.all([modelRows(), engines()]);
}

async function modelRows() {
  const [rows, stats] = await Promise.all([
    api("POST", "/v2/repository/index", {}), api("GET", "/v2/models/stats").catch(() => ({ model_stats: [] }))]);
  const ready = new Set(rows.filter(r => r.state === "READY").map(r => r.name));
  const read = await Promise.all([...ready].map(name => modelConfig(name)));
  [...ready].forEach((name, i) => { configs[name] = read[i]; });
  const figures = {};
  for (const m of stats.model_stats || []) figures[`${m.name}/${m.version}`] = m;
  const signature = JSON.stringify([rows, figures, configs]);
  if (signature === shownModels) return;  // unchanged: keep the rows (and the keyboard focus) as they are
  shownModels = signature;
  const shown = new Set();
  const fresh = rows.map(row => {
    const tr = document.createElement("tr");
    tr.dataset.model = row.name;
    const f = figures[`${row.name}/${row.version}`];
    const config = configs[row.name] || { backend: "–", instances: "–" };
    const hits = f ? f.inference_stats.cache_hit.count : 0;
    const misses = f ? f.inference_stats.cache_miss.count : 0;
    for (const text of [row.name, row.version || "–", row.state || "–", row.reason || "", config.backend,
      config.instances, f ? f.inference_count : "–",
      f && f.execution_count ? (f.inference_count / f.execution_count).toFixed(2) : "–",
      hits + misses ? `${(hits / (hits + misses) * 100).toFixed(1)} %` : "–"]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.appendChild(td);
    }
    tr.children[2].dataset.state = row.state || "";
    const actions = document.createElement("td");
    if (mayAct && !shown.has(row.name)) {  // one set of actions per model, on its first row
      shown.add(row.name);
      const path = `/v2/repository/models/${encodeURIComponent(row.name)}`;
      if (ready.has(row.name)) {
        actions.appendChild(button("Warm up", () => warmUp(row.name)));
        actions.appendChild(button("Unload", () => act(`Unload ${row.name}? Its requests fail until it is loaded again.`,
          "POST", `${path}/unload`, `${row.name} unloaded`)));
      } else {
        actions.appendChild(button("Load", () => act(`Load ${row.name}?`, "POST", `${path}/load`, `${row.name} loaded`)));
      }
    }
    tr.appendChild(actions);
    return tr;
  });
  document.querySelector("#models tbody").replaceChildren(...fresh);
}

async function warmUp(name) {  // no confirmation: it changes nothing, it only runs the model
  say(`Warming ${name} up…`, false, true);
  try {
    const doc = await api("POST", `/v2/repository/models/${encodeURIComponent(name)}/warmup`, {});
    const parts = doc.samples.map(s => s.error ? `${s.name}: failed, ${s.error}`
      : `${s.name} ×${s.runs}: mean ${fixed(s.mean_ms, 2)} ms, max ${fixed(s.max_ms, 2)} ms`);
    say(`${name} version ${doc.version} warmed up: ${parts.join("; ")}`, doc.samples.some(s => s.error), true);
  } catch (error) {
    say(error.message, true, true);
  }
}

const SERVED_ON = { "tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime", "onnxruntime-fallback": "ONNX Runtime (fell back)",
  "onnxruntime-deferred": "ONNX Runtime until rebuilt" };

async function engines() {
  const doc = await api("GET", "/v2/engines");
  const d = doc.device;
  document.getElementById("engines-device").textContent = d.error ? `This device: ${d.error}` :
    `This device: TensorRT ${d.tensorrt_version || "(none)"}, GPU ${d.gpu_name || "(unknown)"}` +
    `${d.compute_capability ? ` (compute ${d.compute_capability})` : ""}, ${d.dla_cores} DLA cores` +
    `${d.l4t_release ? `, L4T ${d.l4t_release}` : ""}`;
  fillRows(document.querySelector("#engines tbody"), doc.engines.length ? doc.engines.map(e => [[e.model, e.version,
    e.precision || "–", e.error ? "–" : `TensorRT ${e.tensorrt_version}, ${e.gpu_name} (${e.compute_capability})`,
    e.created ? when(e.created) : "–", SERVED_ON[e.serving] || e.serving,
    e.error || (e.matches ? "matches" : e.differences.join("; "))],
  { "data-model": e.model, "data-matches": String(e.matches) }]) : [["No model has a TensorRT engine.", "", "", "", "", "", ""]]);
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function declaration(route) {  // what PUT /v2/routes/NAME takes, from what GET gives
  const doc = { arms: route.arms.map(a => {
    const arm = { model: a.model };
    if (a.version) arm.version = a.version;
    if (a.shadow) arm.shadow = true; else arm.weight = a.weight;
    return arm;
  }) };
  if (route.sticky) doc.sticky = route.sticky;
  if (route.shadow_atol) doc.shadow_atol = route.shadow_atol;
  if (route.canary) {
    const { status, share, decisions, baseline_arm, ...policy } = route.canary;
    void status; void share; void decisions; void baseline_arm;
    doc.canary = policy;
  }
  return doc;
}

function percent(x) { return x === null || x === undefined ? "–" : `${(x * 100).toFixed(2)} %`; }

function routeSection(route) {
  const section = el("section", null, { class: "route", "data-route": route.name, "aria-labelledby": `r-${route.name}` });
  section.appendChild(el("h2", route.name, { id: `r-${route.name}` }));
  const table = el("table");
  table.appendChild(el("caption", `Arms of ${route.name}`));
  const head = el("tr");
  for (const h of ["Arm", "Weight", "Requests", "Errors"]) head.appendChild(el("th", h, { scope: "col" }));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  route.arms.forEach((arm, i) => {
    const tr = el("tr", null, { "data-arm": arm.label });
    tr.appendChild(el("td", arm.shadow ? `${arm.label} (shadow)` : arm.label));
    const weight = el("td");
    if (mayAct && !arm.shadow && !route.canary) {
      weight.appendChild(el("input", null, { type: "number", min: "0", max: "1000", value: String(arm.weight),
        "data-index": String(i), "aria-label": `Weight of ${arm.label}` }));
    } else {
      weight.textContent = arm.shadow ? "copy" : String(arm.weight);
    }
    tr.appendChild(weight);
    tr.appendChild(el("td", arm.stats.requests));
    tr.appendChild(el("td", arm.stats.errors));
    body.appendChild(tr);
  });
  section.appendChild(table);
  const path = `/v2/routes/${encodeURIComponent(route.name)}`;
  if (mayAct && !route.canary) {
    section.appendChild(button("Save weights", () => {
      const doc = declaration(route);
      for (const input of section.querySelectorAll("input[data-index]")) {
        doc.arms[Number(input.dataset.index)].weight = Number(input.value);
      }
      act(`Change the weights of ${route.name}?`, "PUT", path, `${route.name}: weights saved`, doc);
    }));
    const candidates = route.arms.map((a, i) => [a, i]).filter(([a, i]) => i > 0 && !a.shadow);
    if (candidates.length) {
      const select = el("select", null, { "aria-label": `Canary arm of ${route.name}` });
      for (const [a, i] of candidates) select.appendChild(el("option", a.label, { value: String(i) }));
      const interval = el("input", null, { type: "number", min: "1", value: "60", "aria-label": "Seconds per step" });
      const least = el("input", null, { type: "number", min: "1", value: "200",
        "aria-label": "Requests on each side before a step is judged" });
      const ratio = el("input", null, { type: "number", min: "1", step: "0.1", value: "1.2",
        "aria-label": "Largest p95 latency ratio of the canary to the stable arm" });
      const start = el("div", null, { class: "canary-start" });
      start.append(el("span", "Canary:"), select, interval, el("span", "s per step, at least"), least,
        el("span", "requests a side, p95 at most"), ratio, el("span", "times the stable arm's"),
        button("Start canary", () => {
        const doc = declaration(route);
        doc.canary = { arm: Number(select.value), interval_s: Number(interval.value),
          min_requests: Number(least.value), max_p95_ratio: Number(ratio.value) };
        act(`Start a canary of ${select.selectedOptions[0].textContent} on ${route.name}?`, "PUT", path,
          `${route.name}: canary started`, doc);
      }));
      section.appendChild(start);
    }
  }
  if (route.canary) {
    const c = route.canary;
    section.appendChild(el("p", `Canary ${route.arms[c.arm].label}: ${c.status}, ${c.share} % of the traffic ` +
      `(steps ${c.steps.join(", ")} %, every ${c.interval_s} s)`, { class: "canary", "data-status": c.status }));
    if (mayAct) {
      const actions = el("div", null, { class: "actions" });
      for (const [action, label, question] of [
        ["pause", "Pause", "Pause the canary (its share stays)?"],
        ["resume", "Resume", "Resume the canary?"],
        ["promote", "Promote", "Promote the canary to all of the traffic?"],
        ["rollback", "Roll back", "Roll the canary back (none of the traffic)?"]]) {
        actions.appendChild(button(label, () => act(`${route.name}: ${question}`, "POST", `${path}/${action}`,
          `${route.name}: ${action} done`)));
      }
      section.appendChild(actions);
    }
    const decisions = el("table", null, { class: "decisions" });
    decisions.appendChild(el("caption", "The canary's decisions, newest first: measured values against thresholds"));
    const dh = el("tr");
    for (const h of ["Time", "Decision", "Share", "By", "Canary", "Reference", "Thresholds", "Why"]) {
      dh.appendChild(el("th", h, { scope: "col" }));
    }
    decisions.appendChild(el("thead")).appendChild(dh);
    const db = decisions.appendChild(el("tbody"));
    for (const d of [...(c.decisions || [])].reverse()) {
      const tr = el("tr", null, { "data-decision": d.decision });
      const fig = w => w ? `${w.requests} req, ${percent(w.error_rate)} errors, p95 ${w.p95_ms ?? "–"} ms` : "–";
      const limits = d.thresholds ? Object.entries(d.thresholds).map(([k, v]) => `${k} ${v}`).join(", ") : "";
      for (const text of [new Date(d.time * 1000).toLocaleTimeString(), d.decision, `${d.step} %`, d.by,
        fig(d.canary), fig(d.reference), limits, d.reason]) tr.appendChild(el("td", text));
      db.appendChild(tr);
    }
    section.appendChild(decisions);
  }
  return section;
}

let shownRoutes = "";

async function routes() {
  const doc = await api("GET", "/v2/routes");
  const holder = document.getElementById("routes");
  if (holder.contains(document.activeElement) && document.activeElement.tagName !== "BUTTON") return;  // editing
  const signature = JSON.stringify(doc.routes);
  if (signature === shownRoutes) return;
  shownRoutes = signature;
  holder.replaceChildren(...(doc.routes.length ? doc.routes.map(routeSection) : [el("p", "No route is declared.")]));
}

function when(t) { return new Date(typeof t === "number" ? t * 1000 : t).toLocaleString(); }

function fillRows(tbody, rows) {  // rows: arrays of cell texts, or [cells, attrs]; unchanged rows stay
  const signature = JSON.stringify(rows.map(row => (Array.isArray(row[0]) ? row[0] : row)
    .map(c => c instanceof Node ? c.textContent : c)));
  if (tbody.dataset.signature === signature) return;
  tbody.dataset.signature = signature;
  tbody.replaceChildren(...rows.map(row => {
    const [cells, attrs] = Array.isArray(row[0]) ? row : [row, {}];
    const tr = el("tr", null, attrs);
    for (const c of cells) tr.appendChild(c instanceof Node ? el("td").appendChild(c).parentNode : el("td", c));
    return tr;
  }));
}

function timelineChart(svg, history, events) {
  const width = 900, height = 160;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const times = history.time || [];
  if (times.length < 2) return;
  const t0 = times[0], t1 = times[times.length - 1];
  const x = t => ((t - t0) / (t1 - t0 || 1) * width).toFixed(1);
  const models = Object.values(history.models || {});
  const p99 = times.map((_, i) => Math.max(...models.map(m => (m.p99_ms || [])[i] || 0), 0));
  const rate = times.map((_, i) => sum(models.map(m => (m.request_rate || [])[i])));
  const ns = "http://www.w3.org/2000/svg";
  for (const [values, cls] of [[p99, "p99"], [rate, "rate"]]) {
    const max = Math.max(...values, 1e-9);
    const path = document.createElementNS(ns, "path");
    path.setAttribute("class", cls);
    path.setAttribute("d", values.map((v, i) => `${i ? "L" : "M"}${x(times[i])},${(height - v / max * (height - 8)).toFixed(1)}`).join(""));
    svg.appendChild(path);
  }
  for (const e of events.filter(e => e.time >= t0)) {
    const mark = document.createElementNS(ns, "line");
    mark.setAttribute("class", `event ${e.kind}`);
    mark.setAttribute("x1", x(e.time)); mark.setAttribute("x2", x(e.time));
    mark.setAttribute("y1", "0"); mark.setAttribute("y2", String(height));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${when(e.time)} ${e.kind}: ${e.detail}`;
    mark.appendChild(title);
    svg.appendChild(mark);
  }
}

async function timeline() {
  const select = document.getElementById("tl-model");
  const model = select.value;
  const query = model ? `?model=${encodeURIComponent(model)}` : "";
  const [history, events] = await Promise.all([api("GET", `/v2/history${query}`), api("GET", `/v2/events${query}`)]);
  const names = Object.keys(history.models || {});
  if (!model && select.options.length - 1 !== names.length) {
    select.replaceChildren(el("option", "all", { value: "" }), ...names.map(n => el("option", n, { value: n })));
  }
  timelineChart(document.getElementById("tl-chart"), history, events.events);
  fillRows(document.querySelector("#events tbody"), [...events.events].reverse().map(e =>
    [[when(e.time), e.kind, e.model || "device", e.detail], { "data-kind": e.kind }]));
}

let unitsListed = false;

async function logs() {
  const select = document.getElementById("log-unit");
  if (!unitsListed) {
    const units = await api("GET", "/v2/units");
    select.append(...units.units.filter(u => u.load !== "not-found").map(u => el("option", u.name, { value: u.name })));
    unitsListed = true;
  }
  const unit = select.value;
  const level = document.getElementById("log-level").value;
  const text = document.getElementById("log-text").value;
  const doc = await api("GET", `/v2/logs?level=${level}&contains=${encodeURIComponent(text)}&limit=500` +
    (unit ? `&unit=${encodeURIComponent(unit)}` : ""));
  const problem = document.getElementById("log-error");
  problem.textContent = doc.error || "";
  problem.hidden = !doc.error;
  const pre = document.getElementById("log-lines");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = doc.lines.map(l => l.text).join("\n");
  if (atEnd) pre.scrollTop = pre.scrollHeight;  // tail, unless the reader scrolled up
}

async function settings() {
  const [keys, audit, effective] = await Promise.all([
    api("GET", "/v2/keys"), api("GET", "/v2/audit?limit=200"), api("GET", "/v2/settings")]);
  fillRows(document.querySelector("#keys tbody"), keys.keys.map(k => {
    const state = k.revoked ? "revoked" : (k.expires && Date.parse(k.expires) < Date.now() ? "expired" : "active");
    const actions = el("span");
    if (mayAct && state === "active") {
      actions.appendChild(button("Revoke", () => act(`Revoke the key ${k.name}? It stops working at once.`,
        "DELETE", `/v2/keys/${encodeURIComponent(k.name)}`, `${k.name} revoked`)));
    }
    return [[k.name, k.role, k.created ? when(k.created) : "–", k.expires ? when(k.expires) : "never", state, actions],
      { "data-key": k.name }];
  }));
  fillRows(document.querySelector("#audit tbody"), [...audit.entries].reverse().map(e =>
    [e.time ? when(e.time) : "", e.key || "–", e.source || "", e.action, e.target || "", e.result]));
  const pre = document.getElementById("settings-json");
  const text = JSON.stringify(effective, null, 2);
  if (pre.textContent !== text) pre.textContent = text;
}

function wire() {
  const form = document.getElementById("key-create");
  if (form) {
    if (!mayAct) form.hidden = true;
    form.addEventListener("submit", async event => {
      event.preventDefault();
      const name = document.getElementById("key-name").value;
      const body = { role: document.getElementById("key-role").value };
      const expires = document.getElementById("key-expires").value;
      if (expires) body.expires = expires;
      try {
        const made = await api("PUT", `/v2/keys/${encodeURIComponent(name)}`, body);
        const shown = document.getElementById("key-made");
        shown.textContent = `Key ${name} (${made.role}): ${made.key} — copy it now, it is not shown again.`;
        shown.hidden = false;
        say(`${name} created`, false, true);
      } catch (error) {
        say(error.message, true, true);
      }
      refresh();
    });
  }
  const upload = document.getElementById("update-form");
  if (upload) {
    upload.addEventListener("submit", async event => {
      event.preventDefault();
      const file = document.getElementById("update-file").files[0];
      if (!file || !window.confirm(`Install ${file.name} into the other slot? The device reboots into it.`)) return;
      say(`Sending ${file.name} (${bytes(file.size)}) and verifying it…`, false, true);
      try {
        const response = await fetch("/v2/update", { method: "POST", credentials: "same-origin", body: file,
          headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": csrf } });
        const doc = await response.json();
        if (!response.ok) throw new Error(doc.error || `HTTP ${response.status}`);
        say(`${doc.version}: ${doc.message}`, false, true);
      } catch (error) {
        say(error.message, true, true);
      }
      refresh();
    });
  }
  for (const id of ["tl-model", "log-unit", "log-level", "log-text"]) {
    const input = document.getElementById(id);
    if (input) input.addEventListener(input.tagName === "SELECT" ? "change" : "input", () => refresh());
  }
  for (const filter of document.querySelectorAll("form.filters:not(#key-create)")) {
    filter.addEventListener("submit", event => event.preventDefault());
  }
}

async function support() {
  const update = await api("GET", "/v2/update");
  const state = document.getElementById("update-state");
  const form = document.getElementById("update-form");
  if (!update.enabled) {
    state.textContent = "Updates are off on this device (no update_dir).";
    form.hidden = true;
    return;
  }
  form.hidden = !mayAct;
  const parts = [`Running slot ${update.boot ? update.boot.slot.toUpperCase() : "?"}`];
  if (update.boot) parts.push(`this boot: ${update.boot.message}`);
  if (update.pending) parts.push(`waiting: ${update.pending.version} in slot ${update.pending.to_slot.toUpperCase()}` +
    (update.pending.this_boot ? " (tried at the next reboot)" : ""));
  if (update.queued) parts.push("a bundle is queued for installation");
  if (update.data_partition) parts.push(`data partition ${update.data_partition.state}`);
  state.textContent = parts.join(" · ");
  fillRows(document.querySelector("#update-history tbody"), [...update.history].reverse().map(h =>
    [[when(h.time), h.outcome, h.version || "", h.message], { "data-outcome": h.outcome }]));
}

const pages = { overview, models, routes, timeline, logs, settings, support };

async function refresh() {
  const fill = pages[page];
  if (!fill) return;
  try {
    await fill();
    if (Date.now() > holdUntil) say(`Updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    say(error.message, true);
  }
}

wire();
if (pages[page]) {
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}
