// The window's pages: sign in with a key (kept in this tab's sessionStorage only), read the JSON under /ui/api/,
// and build every element with textContent, so nothing the server sends is ever parsed as HTML.
"use strict";

const KEY = "oneapi.key";
const $ = (id) => document.getElementById(id);
let me = null;
let logCursors = [null]; // the cursor of each page seen, so "Newer" can go back
let tokenOffset = 0;

// --- talking to the gateway ------------------------------------------------

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { ...options, headers: { Authorization: "Bearer " + key } });
  if (response.status === 401) {
    signOut("That key was not accepted.");
    throw new Error("signed out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function showError(error) {
  if (error.message === "signed out") return;
  $("error").textContent = error.message;
  $("error").hidden = false;
}

// --- building elements -----------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function usd(v) {
  if (v === null || v === undefined) return "—";
  return "$" + Number(v).toFixed(v >= 100 ? 2 : v === 0 || v >= 0.01 ? 4 : 6); // a single request's cost is often under a cent
}
function num(v) { return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"); }
function when(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—"; }
function pct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }

// columns: [header, value-of-row, kind] where kind is "num", or a function of the row giving a class
function fillTable(table, columns, rows, empty) {
  table.replaceChildren();
  const head = el("tr");
  for (const [title] of columns) head.append(el("th", title));
  table.append(head);
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", empty || "nothing yet");
    td.colSpan = columns.length;
    tr.append(td);
    table.append(tr);
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const [, value, kind] of columns) {
      const cls = typeof kind === "function" ? kind(row) : kind;
      tr.append(el("td", value(row), cls));
    }
    table.append(tr);
  }
}

function drawChart(target, svgText) {
  // the server draws the SVG; it is parsed as an SVG document (no HTML parser, no script runs) and adopted
  const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
  target.replaceChildren(document.importNode(doc.documentElement, true));
}

function card(label, value) {
  const box = el("div", null, "card");
  box.append(el("div", label, "label"), el("div", value, "value"));
  return box;
}

// --- signing in and out ----------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $("key");
  const key = input.value.trim();
  input.value = ""; // the key never stays on the page
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  try {
    await start();
  } catch (error) {
    if (error.message !== "signed out") {
      sessionStorage.removeItem(KEY); // an expired or disabled token: nothing to keep
      $("signin-error").textContent = error.message;
      $("signin-error").hidden = false;
    }
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  for (const table of document.querySelectorAll("table")) table.replaceChildren();
  for (const chart of document.querySelectorAll("[id^=chart-]")) chart.replaceChildren();
  $("totals").replaceChildren();
  $("log-filters").reset(); // the next person starts from no filters
  $("token-search").value = "";
  tokenOffset = 0;
  $("tabs").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("error").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("signin-error").hidden = !message;
}

async function start() {
  if (!sessionStorage.getItem(KEY)) return signOut();
  me = await api("/ui/api/me");
  $("signin").hidden = true;
  $("signin-error").hidden = true;
  $("tabs").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = me.role === "admin" ? "admin" : "token: " + me.token;
  for (const node of document.querySelectorAll("[data-admin]")) node.hidden = me.role !== "admin";
  route();
}

function route() {
  if (!me) return;
  let view = (location.hash || "#overview").slice(1);
  if (!$("view-" + view) || (view === "channels" && me.role !== "admin")) view = "overview";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.view === view);
  $("error").hidden = true;
  const load = { overview: loadOverview, tokens: loadTokens, channels: loadChannels, log: () => loadLog(null), config: loadConfig }[view];
  load().catch(showError);
}

// --- views -------------------------------------------------------------------

async function loadOverview() {
  const data = await api("/ui/api/overview?range=" + encodeURIComponent($("range").value));
  const t = data.totals;
  $("totals").replaceChildren(card("Requests", num(t.requests)), card("Errors", num(t.errors)), card("Prompt tokens", num(t.prompt_tokens)),
    card("Completion tokens", num(t.completion_tokens)), card("Spend", usd(t.cost_usd)));
  for (const [name, svg] of Object.entries(data.charts)) {
    const target = $("chart-" + name);
    if (target) drawChart(target, svg);
  }
  fillTable($("by-model"), [["model", (r) => r.model], ["requests", (r) => num(r.requests), "num"], ["errors", (r) => num(r.errors), "num"],
    ["prompt", (r) => num(r.prompt_tokens), "num"], ["completion", (r) => num(r.completion_tokens), "num"], ["spend", (r) => usd(r.cost_usd), "num"]],
    data.by_model, "no requests in this range");
}

const TOKEN_COLUMNS = [
  ["token", (r) => r.name], ["group", (r) => r.group], ["enabled", (r) => (r.enabled ? "yes" : "no")],
  ["budget", (r) => (r.budget_usd === null ? "unlimited" : usd(r.budget_usd)), "num"], ["credits", (r) => usd(r.credits_usd), "num"], ["spent", (r) => usd(r.spent_usd), "num"],
  ["remaining", (r) => (r.remaining_usd === null ? "—" : usd(r.remaining_usd)), "num"], ["period", (r) => r.period],
  ["resets", (r) => (r.resets_at ? r.resets_at.slice(0, 19).replace("T", " ") : "—")],
  ["rpm", (r) => r.rpm ?? "—", "num"], ["tpm", (r) => r.tpm ?? "—", "num"],
  ["expires", (r) => (r.expires ? r.expires.slice(0, 19).replace("T", " ") : "never"), (r) => (r.expired ? "bad" : "")],
];

async function loadTokens() {
  const limit = 50;
  const query = new URLSearchParams({ offset: tokenOffset, limit, q: $("token-search").value });
  const page = await api("/ui/api/tokens?" + query);
  fillTable($("tokens-table"), TOKEN_COLUMNS, page.data, "no tokens match");
  $("tokens-where").textContent = page.total ? `${page.offset + 1}–${page.offset + page.data.length} of ${page.total}` : "";
  $("tokens-prev").disabled = tokenOffset === 0;
  $("tokens-next").disabled = tokenOffset + limit >= page.total;
  $("token-detail").hidden = me.role === "admin";
  if (me.role !== "admin") {
    const [usage, recent] = await Promise.all([api("/ui/api/overview?range=30d"), api("/ui/api/logs?limit=20")]);
    drawChart($("chart-token-days"), usage.charts.cost);
    fillTable($("token-models"), [["model", (r) => r.model], ["requests", (r) => num(r.requests), "num"],
      ["tokens", (r) => num(r.total_tokens), "num"], ["spend", (r) => usd(r.cost_usd), "num"]], usage.by_model);
    fillTable($("token-recent"), LOG_COLUMNS.filter(([title]) => title !== "channel" && title !== "token"), recent.data);
  }
}

async function redeem(event) {
  event.preventDefault();
  const input = $("redeem-code");
  try {
    const done = await api("/v1/dashboard/redeem", { method: "POST", body: JSON.stringify({ code: input.value }) });
    input.value = "";
    $("redeem-result").textContent = `${usd(done.credited_usd)} credited; ${usd(done.remaining_usd)} remains.`;
    await loadTokens();
  } catch (error) {
    showError(error);
  }
}

async function loadChannels() {
  const data = await api("/ui/api/channels");
  fillTable($("channels-table"), [
    ["channel", (r) => r.name], ["provider", (r) => r.provider], ["enabled", (r) => (r.enabled ? "yes" : "no"), (r) => (r.enabled ? "good" : "bad")],
    ["priority", (r) => r.priority, "num"], ["weight", (r) => r.weight, "num"],
    ["breaker", (r) => r.breaker, (r) => (r.breaker === "closed" ? "good" : "bad")],
    ["keys", (r) => r.keys.join(", ")], ["set aside", (r) => r.keys_set_aside.map((k) => `${k.key} (${k.reason})`).join(", ") || "—"],
    ["p50", (r) => (r.p50_ms === null ? "—" : r.p50_ms + " ms"), "num"], ["p95", (r) => (r.p95_ms === null ? "—" : r.p95_ms + " ms"), "num"],
    ["errors", (r) => pct(r.error_rate), "num"],
    ["last error (24 h)", (r) => (r.last_error ? `${r.last_error.status} ${r.last_error.error_type} at ${when(r.last_error.ts)}` : "—"), "wrap"],
    ["last probe", (r) => (r.last_probe ? `${r.last_probe.ok ? "ok" : "failed " + (r.last_probe.status || "")} ${r.last_probe.latency_ms} ms at ${when(r.last_probe.at)}${r.last_probe.error ? ": " + r.last_probe.error : ""}` : "—"),
      (r) => (r.last_probe ? (r.last_probe.ok ? "good wrap" : "bad wrap") : "wrap")],
  ], data.channels, "no channels configured");
  const rows = $("channels-table").querySelectorAll("tr");
  data.channels.forEach((channel, i) => {
    const td = el("td");
    if (channel.routed) {
      const button = el("button", "Probe");
      button.type = "button";
      button.addEventListener("click", () => probe(channel.name, button));
      td.append(button);
    }
    rows[i + 1].append(td);
  });
  rows[0].append(el("th", ""));
}

async function probe(name, button) {
  button.disabled = true;
  button.textContent = "Probing…";
  try {
    await api("/admin/channels/" + encodeURIComponent(name) + "/probe", { method: "POST" });
    await loadChannels();
  } catch (error) {
    showError(error);
    button.disabled = false;
    button.textContent = "Probe";
  }
}

const LOG_COLUMNS = [
  ["time", (r) => when(r.ts)], ["request id", (r) => r.request_id], ["token", (r) => r.token], ["channel", (r) => r.channel || "—"],
  ["model", (r) => r.model], ["upstream model", (r) => r.upstream_model || "—"], ["stream", (r) => (r.stream ? "yes" : "no")],
  ["status", (r) => r.status, (r) => (r.status >= 400 ? "num bad" : "num good")],
  ["prompt", (r) => num(r.prompt_tokens), "num"], ["completion", (r) => num(r.completion_tokens), "num"],
  ["cached", (r) => num(r.cached_tokens), "num"], ["reasoning", (r) => num(r.reasoning_tokens), "num"],
  ["cost", (r) => usd(r.cost_usd), "num"], ["latency", (r) => r.duration_ms + " ms", "num"], ["first byte", (r) => r.ttft_ms + " ms", "num"],
  ["estimated", (r) => (r.estimated ? "yes" : "")], ["error", (r) => r.error_type || ""],
];

function logQuery(cursor) {
  const form = new FormData($("log-filters"));
  const query = new URLSearchParams({ limit: 50 });
  for (const [name, value] of form.entries()) {
    if (!value) continue;
    // the page shows UTC, so the times typed in are UTC too
    query.set(name, name === "since" || name === "until" ? String(Date.parse(value + "Z") / 1000) : value);
  }
  if (cursor) query.set("cursor", cursor);
  return query;
}

async function loadLog(direction) {
  if (direction === null) logCursors = [null];
  else if (direction === "older") logCursors.push(logCursors.nextCursor);
  else if (logCursors.length > 1) logCursors.pop();
  const page = await api("/ui/api/logs?" + logQuery(logCursors[logCursors.length - 1]));
  logCursors.nextCursor = page.next_cursor;
  const columns = me.role === "admin" ? LOG_COLUMNS : LOG_COLUMNS.filter(([title]) => title !== "token");
  fillTable($("log-table"), columns, page.data, "no requests match");
  $("log-where").textContent = `page ${logCursors.length}`;
  $("log-newer").disabled = logCursors.length <= 1;
  $("log-older").disabled = !page.has_more;
}

async function loadConfig() {
  const data = await api("/ui/api/config");
  const list = $("config-list");
  list.replaceChildren();
  const rows = [["config version", data.config_version], ["loaded at", when(data.loaded_at)], ["built in", data.reload_ms + " ms"]];
  if (me.role === "admin") {
    rows.push(["last reload error", data.last_reload_error || "none"], ["channels routed", data.channels], ["tokens", num(data.tokens)],
      ["store", data.store], ["log retention", data.retention_days ? data.retention_days + " days" : "kept for ever"], ["log format", data.log_format]);
  }
  for (const [term, value] of rows) list.append(el("dt", term), el("dd", value));
}

// --- wiring ------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("redeem-form").addEventListener("submit", redeem);
  $("signout").addEventListener("click", () => { signOut(); location.hash = ""; });
  $("range").addEventListener("change", () => loadOverview().catch(showError));
  $("log-filters").addEventListener("submit", (event) => { event.preventDefault(); loadLog(null).catch(showError); });
  $("log-older").addEventListener("click", () => loadLog("older").catch(showError));
  $("log-newer").addEventListener("click", () => loadLog("newer").catch(showError));
  $("token-search").addEventListener("input", () => { tokenOffset = 0; loadTokens().catch(showError); });
  $("tokens-prev").addEventListener("click", () => { tokenOffset = Math.max(0, tokenOffset - 50); loadTokens().catch(showError); });
  $("tokens-next").addEventListener("click", () => { tokenOffset += 50; loadTokens().catch(showError); });
  window.addEventListener("hashchange", route);
  start().catch(showError);
});
