"use strict";
// fulcrum's dashboard. Once a second it reads /api/pools (states, weights, per-backend
// counters) and /metrics (per-pool status classes, latency histograms, drain counters; and
// /api/ha when the metrics say HA is configured), keeps two minutes of history per series in
// this tab and draws sparklines. Counters become rates from the difference of two polls, and
// latency quantiles come from the difference of two histograms, as Prometheus's rate() and
// histogram_quantile() would compute them.

const POLL_MS = 1000;
const HISTORY = 120;
const TOKEN_KEY = "fulcrum-admin-token";
const ADMINISTRATIVE = new Set(["draining", "drained", "disabled"]);

const tokenRequired =
  document.querySelector('meta[name="fulcrum-token"]').content === "required";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
const history = new Map(); // series key -> values, oldest first (null: nothing to show)
let previous = null; // the previous poll's snapshot
let timer = null;

class Unauthorized extends Error {}

// --- talking to the admin API ----------------------------------------------------------

async function call(method, path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { method, headers, cache: "no-store" });
  if (response.status === 401) {
    throw new Unauthorized("the admin token is missing or wrong");
  }
  return response;
}

async function read(path, as) {
  const response = await call("GET", path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return as === "text" ? response.text() : response.json();
}

// Prometheus text format: one sample per line, `name{label="value",…} number`.
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const text_line of text.split("\n")) {
    if (text_line === "" || text_line[0] === "#") continue;
    const m = line.exec(text_line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(label)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1], labels, value: number(m[3]) });
  }
  return samples;
}

function number(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

// --- what one poll measured ------------------------------------------------------------

// Counters and histograms by stable keys (pool names, backend addresses), so a pool or a
// backend that comes or goes never shifts another's series.
function snapshot(pools, samples) {
  const counters = new Map();
  const histograms = new Map();
  const add = (key, value) => counters.set(key, (counters.get(key) || 0) + value);
  const bucket = (key, le, value) => {
    if (!histograms.has(key)) histograms.set(key, new Map());
    const h = histograms.get(key);
    h.set(le, (h.get(le) || 0) + value);
  };
  let open = 0;
  for (const s of samples) {
    const pool = s.labels.pool;
    switch (s.name) {
      case "fulcrum_http_requests_total":
      case "fulcrum_tcp_connections_total":
        add(`${pool}/requests`, s.value);
        if (s.labels.code_class === "5xx") add(`${pool}/errors`, s.value);
        break;
      case "fulcrum_tcp_errors_total":
        add(`${pool}/errors`, s.value);
        break;
      case "fulcrum_http_request_duration_seconds_bucket":
        bucket(`${pool}/duration`, number(s.labels.le), s.value);
        break;
      case "fulcrum_http_routing_latency_seconds_bucket":
        bucket(`${pool}/routing`, number(s.labels.le), s.value);
        break;
      case "fulcrum_pool_drains_started_total":
      case "fulcrum_pool_drains_completed_total":
      case "fulcrum_pool_drains_timed_out_total":
      case "fulcrum_pool_ejections_suppressed_total":
        add(`${pool}/${s.name}`, s.value);
        break;
      case "fulcrum_listener_open_connections":
        open += s.value;
        break;
    }
  }
  for (const pool of pools) {
    for (const b of pool.backends) {
      counters.set(`${pool.name}/${b.addr}/requests`, b.requests);
      counters.set(`${pool.name}/${b.addr}/failures`, b.failures);
    }
  }
  return { at: performance.now() / 1000, counters, histograms, open };
}

// Per second since the previous poll; null on the first poll or after a counter reset.
function rate(now, key) {
  if (!previous || !now.counters.has(key) || !previous.counters.has(key)) return null;
  const delta = now.counters.get(key) - previous.counters.get(key);
  const seconds = now.at - previous.at;
  return delta >= 0 && seconds > 0 ? delta / seconds : null;
}

// The q-quantile of what the histogram observed since the previous poll, interpolated
// inside its bucket; null when nothing was observed.
function quantile(now, key, q) {
  const h = now.histograms.get(key);
  const before = previous && previous.histograms.get(key);
  if (!h || !before) return null;
  const bounds = [...h.keys()].sort((a, b) => a - b);
  const delta = bounds.map((le) => (h.get(le) || 0) - (before.get(le) || 0));
  const total = delta[delta.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (delta[i] >= rank) {
      if (bounds[i] === Infinity) return i > 0 ? bounds[i - 1] : null;
      const lower = i > 0 ? bounds[i - 1] : 0;
      const below = i > 0 ? delta[i - 1] : 0;
      const inside = delta[i] - below;
      return inside > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inside) : bounds[i];
    }
  }
  return null;
}

function remember(key, value) {
  if (!history.has(key)) history.set(key, []);
  const values = history.get(key);
  values.push(value);
  if (values.length > HISTORY) values.shift();
  return values;
}

// --- drawing ------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const e = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) e.setAttribute(name, value);
  e.append(...children);
  return e;
}

function sparkline(kind) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark " + kind);
  svg.setAttribute("viewBox", "0 0 100 26");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.append(document.createElementNS("http://www.w3.org/2000/svg", "path"));
  return svg;
}

// `floor`: the smallest top of the scale (a weight's configured value, say), so a flat line
// is drawn where it belongs rather than at the top.
function draw(svg, values, floor = 0) {
  const shown = values.filter((v) => v !== null);
  const top = Math.max(floor, ...shown, 1e-9);
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) {
      pen = false;
      return;
    }
    const x = ((HISTORY - values.length + i) * 100) / (HISTORY - 1);
    const y = 25 - (v / top) * 23;
    d += `${pen ? "L" : "M"}${x.toFixed(2)} ${y.toFixed(2)}`;
    pen = true;
  });
  svg.firstChild.setAttribute("d", d);
}

function perSecond(v) {
  if (v === null) return "–";
  return v < 10 ? v.toFixed(1) + "/s" : Math.round(v).toLocaleString("en") + "/s";
}

function seconds(v) {
  if (v === null) return "–";
  if (v < 1e-3) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + " ms";
  return v.toFixed(2) + " s";
}

function chart(series, title, kind) {
  const value = el("span", { class: "value" }, "–");
  const box = el(
    "div",
    { class: "chart", "data-series": series },
    el("div", { class: "label" }, el("span", {}, title), value),
    sparkline(kind),
  );
  return box;
}

function showChart(box, values, text) {
  const latest = values[values.length - 1];
  box.dataset.value = latest === null ? "" : String(latest);
  box.querySelector(".value").textContent = text(latest);
  draw(box.querySelector("svg"), values);
}

function poolSection(name) {
  const section = el(
    "section",
    { class: "pool", "data-pool": name },
    el(
      "div",
      { class: "pool-head" },
      el("h2", {}, name),
      el("span", { class: "badge info algorithm" }),
      el("span", { class: "badge bad panic", hidden: "" }, "PANIC: every backend gets traffic"),
      el("span", { class: "badge warn draining", hidden: "" }),
      el("span", { class: "badge discovery", hidden: "" }),
      el("span", { class: "muted counters" }),
    ),
    el(
      "div",
      { class: "charts" },
      chart("rate", "requests/s", "rate"),
      chart("errors", "5xx and failed connections/s", "errors"),
      chart("p99", "p99 request duration", "latency"),
      chart("routing_p99", "p99 added by fulcrum", "latency"),
    ),
    el(
      "table",
      {},
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["backend", "state", "weight", "effective weight", "in flight", "requests/s",
            "failures/s", ""].map((h) => el("th", {}, h)),
        ),
      ),
      el("tbody"),
    ),
  );
  return section;
}

function backendRow(pool, addr) {
  const button = (action) => {
    const b = el("button", { type: "button", "data-action": action }, action);
    b.addEventListener("click", () => act(pool, addr, action));
    return b;
  };
  return el(
    "tr",
    { "data-backend": addr },
    el("td", {}, addr),
    el("td", { class: "state" }),
    el("td", { class: "num weight" }),
    ...["weight", "in_flight", "rate", "failures"].map((series) =>
      el(
        "td",
        { class: "spark", "data-series": series },
        el("span", { class: "value" }),
        sparkline(series === "failures" ? "errors" : series === "weight" ? "weight" : "rate"),
      ),
    ),
    el("td", { class: "actions" }, button("drain"), " ", button("enable"), " ", button("disable")),
  );
}

function render(pools, now, samples, ha) {
  const main = document.getElementById("pools");
  const seen = new Set();
  let total = 0;
  let backends = 0;
  let inFlight = 0;
  for (const pool of pools) {
    seen.add(pool.name);
    let section = main.querySelector(`section[data-pool="${CSS.escape(pool.name)}"]`);
    if (!section) {
      section = poolSection(pool.name);
      main.append(section);
    }
    const key = (k) => `${pool.name}/${k}`;
    const requests = rate(now, key("requests"));
    total += requests || 0;
    showChart(section.querySelector('[data-series="rate"]'), remember(key("rate"), requests), perSecond);
    showChart(section.querySelector('[data-series="errors"]'), remember(key("errors"), rate(now, key("errors"))), perSecond);
    showChart(section.querySelector('[data-series="p99"]'), remember(key("p99"), quantile(now, key("duration"), 0.99)), seconds);
    showChart(section.querySelector('[data-series="routing_p99"]'), remember(key("routing_p99"), quantile(now, key("routing"), 0.99)), seconds);
    section.dataset.panic = String(pool.panic);
    section.querySelector(".algorithm").textContent = pool.algorithm;
    section.querySelector(".panic").hidden = !pool.panic;
    const draining = pool.backends.filter((b) => b.state === "draining").length;
    const drainBadge = section.querySelector(".draining");
    drainBadge.hidden = draining === 0;
    drainBadge.textContent = `${draining} draining`;
    showDiscovery(section.querySelector(".discovery"), pool.discovery);
    const c = (name) => now.counters.get(key(name)) || 0;
    section.querySelector(".counters").textContent =
      `drains: ${c("fulcrum_pool_drains_started_total")} started, ` +
      `${c("fulcrum_pool_drains_completed_total")} completed, ` +
      `${c("fulcrum_pool_drains_timed_out_total")} timed out · ` +
      `ejections held by the cap: ${c("fulcrum_pool_ejections_suppressed_total")}`;
    const tbody = section.querySelector("tbody");
    const rows = new Set();
    for (const b of pool.backends) {
      backends += 1;
      inFlight += b.in_flight;
      rows.add(b.addr);
      let row = tbody.querySelector(`tr[data-backend="${CSS.escape(b.addr)}"]`);
      if (!row) {
        row = backendRow(pool.name, b.addr);
        tbody.append(row);
      }
      showBackend(row, pool.name, b, now);
    }
    for (const row of [...tbody.children]) {
      if (!rows.has(row.dataset.backend)) {
        forget(`${pool.name}/${row.dataset.backend}/`);
        row.remove();
      }
    }
  }
  for (const section of [...main.children]) {
    if (!seen.has(section.dataset.pool)) {
      forget(`${section.dataset.pool}/`);
      section.remove();
    }
  }
  document.getElementById("summary").textContent =
    `${pools.length} pools · ${backends} backends · ${inFlight} in flight · ` +
    `${now.open} client connections · ${perSecond(previous ? total : null)}`;
  showHa(ha, samples);
}

function showBackend(row, pool, b, now) {
  const key = (k) => `${pool}/${b.addr}/${k}`;
  row.dataset.state = b.state;
  const state = row.querySelector(".state");
  state.className = "state state-" + b.state;
  state.textContent = b.state;
  state.title = `since ${new Date(b.state_since * 1000).toLocaleTimeString()}, cause: ${b.cause}` +
    (b.last_probe ? `\nlast probe (${b.last_probe.check}): ${b.last_probe.result}` : "");
  row.querySelector(".weight").textContent = String(b.weight);
  const cell = (series, value, text, floor) => {
    const td = row.querySelector(`td[data-series="${series}"]`);
    td.querySelector(".value").textContent = text(value);
    draw(td.querySelector("svg"), remember(key(series), value), floor);
  };
  cell("weight", b.effective_weight, (v) => v.toFixed(2), b.weight);
  cell("in_flight", b.in_flight, String, 1);
  cell("rate", rate(now, key("requests")), perSecond, 1);
  cell("failures", rate(now, key("failures")), perSecond, 1);
  const administrative = ADMINISTRATIVE.has(b.state);
  row.querySelector('[data-action="drain"]').disabled = b.state === "draining" || b.state === "drained";
  row.querySelector('[data-action="enable"]').disabled = !administrative;
  row.querySelector('[data-action="disable"]').disabled = b.state === "disabled";
}

function showDiscovery(badge, d) {
  badge.hidden = !d;
  if (!d) return;
  badge.className = "badge discovery " + (d.connected ? "ok" : "bad");
  badge.textContent = d.connected
    ? `${d.source}: connected, ${d.discovered} registered, ${d.updates} updates`
    : `${d.source}: unreachable for ${Math.round(d.stale_seconds)} s, holding the last list`;
  badge.title = d.last_error || "";
}

function showHa(ha, samples) {
  const badge = document.getElementById("ha");
  badge.hidden = !ha;
  if (!ha) return;
  const promotions = samples
    .filter((s) => s.name === "fulcrum_ha_promotions_total")
    .reduce((sum, s) => sum + s.value, 0);
  badge.className = "badge " + (ha.role === "active" ? "ok" : ha.role === "standby" ? "info" : "warn");
  badge.textContent = `HA ${ha.node}: ${ha.role}` + (ha.epoch !== undefined ? `, epoch ${ha.epoch}` : "");
  badge.title = (ha.leader ? `leader: ${ha.leader.node} (epoch ${ha.leader.epoch})\n` : "") +
    `promotions: ${promotions}`;
}

function forget(prefix) {
  for (const key of [...history.keys()]) if (key.startsWith(prefix)) history.delete(key);
}

function say(text, kind = "") {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = kind;
}

// --- the loop and the actions -------------------------------------------------------------

async function poll() {
  const [pools, text] = await Promise.all([read("/api/pools"), read("/metrics", "text")]);
  const samples = parseMetrics(text);
  const ha = samples.some((s) => s.name === "fulcrum_ha_role") ? await read("/api/ha") : null;
  const now = snapshot(pools, samples);
  render(pools, now, samples, ha);
  previous = now;
}

async function loop() {
  clearTimeout(timer);
  try {
    await poll();
    if (document.getElementById("status").className === "error") say("");
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken(error.message);
    say(`cannot read the admin API: ${error.message}`, "error");
  }
  timer = setTimeout(loop, POLL_MS);
}

async function act(pool, addr, action) {
  say(`${action} ${addr}…`);
  try {
    const path = `/api/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(addr)}/${action}`;
    const response = await call("POST", path);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    say(`${action}: ${addr} in ${pool}`, "done");
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken(error.message);
    say(`${action} ${addr}: ${error.message}`, "error");
  }
  loop();
}

function askForToken(why) {
  clearTimeout(timer);
  document.getElementById("token-form").hidden = false;
  document.getElementById("token").focus();
  say(why, "error");
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("token-form").hidden = true;
  say("");
  loop();
});

if (tokenRequired && !token) {
  askForToken("this admin API needs its bearer token");
} else {
  loop();
}
