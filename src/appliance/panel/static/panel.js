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
  const [ready, meta, index, history, device, update] = await Promise.all([
    fetch("/v2/health/ready").then(r => r.ok),
    api("GET", "/v2"),
    api("POST", "/v2/repository/index", {}),
    api("GET", "/v2/history"),
    api("GET", "/v2/device").catch(() => null),
    api("GET", "/v2/update").catch(() => null),
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
  const load = last(dev.gpu_load || []);
  set("gpu_load", load === null ? "–" : `${(load * 100).toFixed(0)} %`);
  set("temperature_c", fixed(last(dev.temperature_c || []), 1));
  set("board_power_w", fixed(last(dev.board_power_w || []), 1));
  set("memory", bytes(last(dev.memory_used_bytes || [])));
  set("power_mode", device && device.power_mode ? device.power_mode.name || String(device.power_mode.id) : "–");
  set("slot", update && update.boot ? update.boot.slot.toUpperCase() : "–");
  const series = { request_rate: rates, p99_ms: p99, gpu_load: dev.gpu_load || [] };
  for (const svg of document.querySelectorAll("svg[data-chart]")) chart(svg, series[svg.dataset.chart] || []);
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
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

async function models() {
  const rows = await api("POST", "/v2/repository/index", {});
  const signature = JSON.stringify(rows);
  if (signature === shownModels) return;  // unchanged: keep the rows (and the keyboard focus) as they are
  shownModels = signature;
  const ready = new Set(rows.filter(r => r.state === "READY").map(r => r.name));
  const shown = new Set();
  const fresh = rows.map(row => {
    const tr = document.createElement("tr");
    tr.dataset.model = row.name;
    for (const text of [row.name, row.version || "–", row.state || "–", row.reason || ""]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.children[2].dataset.state = row.state || "";
    const actions = document.createElement("td");
    if (mayAct && !shown.has(row.name)) {  // one set of actions per model, on its first row
      shown.add(row.name);
      const path = `/v2/repository/models/${encodeURIComponent(row.name)}`;
      actions.appendChild(ready.has(row.name)
        ? button("Unload", () => act(`Unload ${row.name}? Its requests fail until it is loaded again.`,
          "POST", `${path}/unload`, `${row.name} unloaded`))
        : button("Load", () => act(`Load ${row.name}?`, "POST", `${path}/load`, `${row.name} loaded`)));
    }
    tr.appendChild(actions);
    return tr;
  });
  document.querySelector("#models tbody").replaceChildren(...fresh);
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

const pages = { overview, models, routes };

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

if (pages[page]) {
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}
