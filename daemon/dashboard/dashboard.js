// personad's dashboard: the HTTP API's answers, kept live by its event stream.
"use strict";

const state = { profiles: {}, jobs: [], profile: null, active: null, rejects: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function byId(id) { return document.getElementById(id); }

function showError(message) { byId("error").textContent = message || ""; }

async function api(command, args, post) {
  let url = "/api/" + command;
  const options = { credentials: "same-origin", headers: { accept: "application/json" } };
  if (post) {
    options.method = "POST";
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(args || {});
  } else if (args) {
    url += "?" + new URLSearchParams(args).toString();
  }
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) {
    const err = data.error || {};
    throw new Error(`${err.message || response.statusText} (${err.code || response.status})`);
  }
  return data;
}

function pct(v) { return v === null || v === undefined ? "-" : Math.round(v * 100) + "%"; }
function num(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "-"; }
function eta(s) {
  if (typeof s !== "number") return "-";
  return s >= 60 ? `${Math.floor(s / 60)}m ${Math.round(s % 60)}s` : `${Math.round(s)}s`;
}

function count(profile, field, label, value) {
  return el("div", {}, el("dt", {}, label),
    el("dd", { "data-profile": profile, "data-field": field }, value));
}

function renderProfiles() {
  const box = byId("profiles");
  const names = Object.keys(state.profiles).sort();
  box.replaceChildren();
  if (!names.length) box.append(el("p", { class: "muted" }, "no profiles yet: drop memories into a profile's memory folder"));
  for (const name of names) {
    const p = state.profiles[name];
    const modes = Object.entries(p.eligible_by_mode || {}).map(([m, n]) => `${m} ${n}`).join(", ") || "-";
    box.append(el("div", { class: "card", id: "profile-" + name },
      el("h3", {}, name, p.paused ? " (paused)" : ""),
      el("dl", { class: "counts" },
        count(name, "memories", "memories", p.memories),
        count(name, "rejects", "rejects", p.rejects),
        count(name, "indexed", "indexed", p.indexed),
        count(name, "eligible_samples", "eligible", p.eligible_samples),
        count(name, "since_last_training", "since training", p.since_last_training),
        count(name, "active_version", "active", p.active_version || "none"),
        count(name, "queue", "queued files", p.queue)),
      el("p", { class: "muted" }, "eligible by mode: " + modes)));
  }
  const select = byId("profile");
  const current = state.profile || names[0] || null;
  if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  if (current && state.profile !== current) { state.profile = current; }
  if (current) select.value = current;
}

function renderJobs() {
  const box = byId("jobs-live");
  box.replaceChildren();
  if (!state.jobs.length) { box.append(el("p", { class: "muted" }, "no job running")); return; }
  for (const job of state.jobs) {
    const p = job.progress || {};
    const total = p.total_steps || 0;
    const step = p.step || 0;
    box.append(el("div", { class: "card", id: "job-" + job.id },
      el("h3", {}, `job ${job.id}: ${job.profile} ${job.kind} (${job.state}${p.phase ? ", " + p.phase : ""})`),
      el("progress", { id: "job-" + job.id + "-bar", class: "job-bar", max: total || 1, value: total ? step : 0,
        "data-step": step, "data-total": total }),
      el("p", {}, `step ${step}/${total || "?"} · loss ${num(p.loss, 4)} · eval ${num(p.eval_loss, 4)} · ETA ${eta(p.eta_s)}`)));
  }
}

function renderRejects(rows) {
  const list = byId("rejects");
  list.replaceChildren(...rows.map((r) => el("li", {},
    el("strong", {}, (r.path || "record").split("/").pop() + (r.locator ? " " + r.locator : "")), ": ", r.reason)));
  if (!rows.length) list.append(el("li", { class: "muted" }, "none"));
}

function lossChart(info) {
  const all = info.train_loss.concat(info.eval_loss);
  if (!all.length) return el("p", { class: "muted" }, "no loss recorded");
  const xs = all.map((p) => p[0]); const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const scale = (pts) => pts.map(([x, y]) => [
    ((x - x0) / ((x1 - x0) || 1) * 300).toFixed(1), (110 - (y - y0) / ((y1 - y0) || 1) * 100).toFixed(1)]);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 300 120");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "curve");
  for (const [pts, color] of [[info.train_loss, "#2f5bd3"], [info.eval_loss, "#d97706"]]) {
    if (!pts.length) continue;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", scale(pts).map((p) => p.join(",")).join(" "));
    line.setAttribute("stroke", color);
    svg.append(line);
  }
  return el("div", {}, svg, el("p", { class: "muted" },
    `train loss ${num(ys[0], 3)} → ${num(info.train_loss.length ? info.train_loss[info.train_loss.length - 1][1] : null, 3)} (blue), eval (orange)`));
}

function fidelityLine(f) {
  if (!f) return "fidelity not measured";
  return `fidelity: recall ${pct(f.recall)} (with memories ${pct(f.recall_with_retrieval)}), style ${pct(f.transfer)}` +
    (f.reference ? `; reference recall ${pct(f.reference.recall)}` : "") + `; probes ${f.probes ?? "-"}`;
}

async function showRun(jobId, box) {
  try {
    const info = await api("run_info", { job: jobId });
    const gate = info.gate;
    box.replaceChildren(lossChart(info),
      el("p", { class: gate ? (gate.passed ? "passed" : "rejected") : "muted" },
        gate ? `gate ${gate.passed ? "passed" : "rejected"}: ${gate.reason || ""}` : "no gate verdict"),
      el("p", {}, fidelityLine(info.fidelity)));
  } catch (err) { box.replaceChildren(el("p", { class: "muted" }, err.message)); }
}

async function loadRuns() {
  const { jobs } = await api("jobs", { limit: 10 });
  const box = byId("runs");
  box.replaceChildren();
  for (const job of jobs.filter((j) => !state.profile || j.profile === state.profile)) {
    const detail = el("div", { class: "run-detail" });
    box.append(el("div", { class: "card", id: "run-" + job.id },
      el("h3", {}, `job ${job.id} ${job.kind}: ${job.state}`),
      el("p", { class: "muted" }, job.reason || job.error || ""),
      job.run_dir ? el("button", { class: "quiet", type: "button", onclick: () => showRun(job.id, detail) }, "curves & verdict") : null,
      detail));
  }
  if (!box.children.length) box.append(el("p", { class: "muted" }, "no runs yet"));
}

async function loadVersions() {
  const body = byId("versions").tBodies[0];
  if (!state.profile) { body.replaceChildren(); return; }
  const { versions } = await api("versions", { profile: state.profile });
  body.replaceChildren(...versions.slice().reverse().map((v) => el("tr", { id: "version-" + v.version },
    el("td", {}, `v${v.version}`, v.active ? " (active)" : ""),
    el("td", { class: "muted" }, fidelityLine(v.fidelity)),
    el("td", {}, v.active ? "" : el("button", { class: "rollback", type: "button", "data-version": v.version,
      onclick: () => rollbackTo(v.version) }, "make active")))));
  if (!versions.length) body.append(el("tr", {}, el("td", { class: "muted" }, "no published version")));
}

async function rollbackTo(version) {
  if (!window.confirm(`Make v${version} the active model of ${state.profile}?`)) return;
  try {
    const result = await api("rollback", { profile: state.profile, to: version }, true);
    byId("rollback-result").textContent = `${result.profile}: v${result.from} → v${result.active}`;
    const status = await api("status");
    onCounts({ daemon: status.daemon, profiles: status.profiles });
    await loadVersions();
  } catch (err) { showError(err.message); }
}

async function loadRejects() {
  if (!state.profile) return;
  const { rejects } = await api("rejects", { profile: state.profile, limit: 20 });
  renderRejects(rejects);
}

async function refreshProfileViews() {
  try { await Promise.all([loadVersions(), loadRejects(), loadRuns()]); showError(""); }
  catch (err) { showError(err.message); }
}

function onCounts(data) {
  const d = data.daemon;
  byId("daemon-state").textContent = d.state + (d.paused ? " (paused)" : "");
  byId("ingest-state").textContent = `ingest ${d.ingest.state}, ${d.ingest.queue} queued`;
  const before = state.profiles[state.profile] || {};
  state.profiles = data.profiles;
  renderProfiles();
  const now = state.profiles[state.profile] || {};
  if (before.active_version !== now.active_version || before.rejects !== now.rejects) refreshProfileViews();
}

function onProgress(data) {
  const ids = (jobs) => jobs.map((j) => `${j.id}:${j.state}`).join(",");
  const changed = ids(state.jobs) !== ids(data.jobs);
  state.jobs = data.jobs;
  renderJobs();
  if (changed) loadRuns().catch((err) => showError(err.message));
}

function connect() {
  const live = byId("live");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "pill on"; });
  source.addEventListener("error", () => { live.textContent = "offline"; live.className = "pill off"; });
  source.addEventListener("counts", (e) => onCounts(JSON.parse(e.data)));
  source.addEventListener("progress", (e) => onProgress(JSON.parse(e.data)));
}

function wireForms() {
  byId("profile").addEventListener("change", (e) => { state.profile = e.target.value; refreshProfileViews(); });
  byId("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const list = byId("search-results");
    try {
      const { results } = await api("search", { profile: state.profile, query: byId("search-query").value, k: 5 }, true);
      list.replaceChildren(...results.map((r) => el("li", {}, r.text, el("span", { class: "muted" }, ` (${num(r.score, 2)})`))));
      if (!results.length) list.append(el("li", { class: "muted" }, "nothing found"));
    } catch (err) { list.replaceChildren(el("li", { class: "error" }, err.message)); }
  });
  byId("ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = byId("ask-answer");
    out.textContent = "thinking…";
    try {
      const result = await api("ask", { profile: state.profile, question: byId("ask-question").value }, true);
      out.textContent = Object.entries(result.answers || {})
        .map(([label, a]) => `${label}: ${a.text ?? a.answer ?? JSON.stringify(a)}`).join("\n") || "no answer";
    } catch (err) { out.textContent = err.message; }
  });
}

async function start() {
  wireForms();
  try {
    const status = await api("status");
    onCounts({ daemon: status.daemon, profiles: status.profiles });
    onProgress({ jobs: status.jobs });
    await refreshProfileViews();
  } catch (err) { showError(err.message); }
  connect();
}

document.addEventListener("DOMContentLoaded", start);
