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

async function act(question, method, path, done) {
  if (!window.confirm(question)) return;
  try {
    await api(method, path, {});
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

const pages = { overview, models };

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
