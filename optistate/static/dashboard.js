// optistate serve: renders the overview and agent pages from the JSON API (/api/...).
// Every value is put in the page as text (textContent), never as HTML.
"use strict";

(function () {
  const page = document.body.dataset.page;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      node.append(child instanceof Node ? child : document.createTextNode(child === null ? "-" : String(child)));
    }
    return node;
  }

  function age(seconds) {
    const units = [["d", 86400], ["h", 3600], ["m", 60]];
    for (const [unit, size] of units) if (seconds >= size) return `${Math.floor(seconds / size)}${unit} ago`;
    return `${Math.max(Math.floor(seconds), 0)}s ago`;
  }

  function time(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "-";
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // Liveness moves with time alone: a heartbeat's age grows between answers, so it is recomputed every second.
  let fetchedAt = Date.now();
  function liveness(row, ttl, status) {
    if (row.liveness === "offline" || status === "offline") return ["offline", row.heartbeat_age_seconds];
    const seconds = row.heartbeat_age_seconds + (Date.now() - fetchedAt) / 1000;
    return [seconds < ttl ? "alive" : "stale", seconds];
  }

  function badge(state, seconds) {
    return [el("span", { class: `badge ${state}` }, state), " ", el("span", { class: "age" }, age(seconds))];
  }

  function agentLink(name, type) {
    return `/agents/${encodeURIComponent(name)}?type=${encodeURIComponent(type)}`;
  }

  function lastError(error) {
    return error ? el("span", { class: "error" }, `${error.error}: ${error.message}`) : "-";
  }

  // -- the overview --------------------------------------------------------------------------------------------
  let rows = [];
  const filters = new URLSearchParams(location.search);

  function tickOverview() {  // only the liveness cells change with time; the rows stay
    const cells = document.querySelectorAll("#agents tr[data-agent] td.liveness");
    rows.forEach((row, i) => {
      const [state, seconds] = liveness(row, row.ttl_seconds, row.status);
      if (cells[i]) { cells[i].replaceChildren(...badge(state, seconds)); cells[i].parentNode.dataset.liveness = state; }
    });
  }

  function overviewRow(row) {
    const [state, seconds] = liveness(row, row.ttl_seconds, row.status);
    const leases = row.leases.map((l) => el("span", { class: "lease" }, `${l.resource} #${l.token} until ${time(l.expires_at)}`));
    return el("tr", { "data-agent": row.name, "data-liveness": state },
      el("td", {}, el("a", { href: agentLink(row.name, row.type) }, row.name)),
      el("td", { class: "liveness" }, badge(state, seconds)),
      el("td", {}, row.type),
      el("td", { class: `status-${row.status}` }, row.status),
      el("td", {}, row.workflow),
      el("td", { class: "leases" }, leases.length ? leases : "-"),
      el("td", { class: "errors" }, row.error_count),
      el("td", {}, lastError(row.last_error)));
  }

  function renderOverview() {
    const body = document.getElementById("agents");
    body.replaceChildren(...(rows.length ? rows.map(overviewRow) : [el("tr", {}, el("td", { colspan: 8 }, "No agents."))]));
  }

  async function refreshOverview() {
    const query = new URLSearchParams();
    for (const name of ["type", "liveness"]) if (filters.get(name)) query.set(name, filters.get(name));
    rows = await getJSON(`/api/agents?${query}`);
    fetchedAt = Date.now();
    renderOverview();
  }

  // -- the agent page ------------------------------------------------------------------------------------------
  const agentName = document.body.dataset.agent;
  const agentType = document.body.dataset.type;
  let detail = null;

  function fill(id, items, row, empty) {
    const body = document.getElementById(id);
    body.replaceChildren(...(items.length ? items.map(row) : [el("tr", {}, el("td", { colspan: 4 }, empty))]));
  }

  function tickAgent() {
    if (detail === null) return;
    const [live, seconds] = liveness(detail, detail.agent.ttl_seconds, detail.agent.status);
    const cell = document.getElementById("liveness");
    if (cell) cell.replaceChildren(...badge(live, seconds));
  }

  function renderAgent() {
    const state = detail.state;
    const [live, seconds] = liveness(detail, detail.agent.ttl_seconds, detail.agent.status);
    const fact = (label, ...value) => el("div", {}, el("b", {}, label), ...value);
    document.getElementById("summary").replaceChildren(
      fact("liveness", el("span", { id: "liveness" }, ...badge(live, seconds))),
      fact("status", el("span", { class: `status-${state.status}` }, state.status)),
      fact("workflow", state.current_workflow),
      fact("errors", `${state.error_count}`),
      fact("version", detail.agent.version),
      fact("leases held", detail.leases.map((l) => `${l.resource} #${l.token}`).join(", ") || "-"),
      fact("locks named", state.resource_locks.join(", ") || "-"),
      fact("last error", lastError(state.last_error)));
    fill("configs", detail.configs, (c) => el("tr", { "data-key": c.key },
      el("td", {}, c.key), el("td", {}, c.type),
      el("td", { class: c.sensitive ? "value masked" : "value" }, typeof c.value === "string" ? c.value : JSON.stringify(c.value)),
      el("td", {}, c.description)), "no configs");
    fill("capabilities", detail.capabilities, (c) => el("tr", {},
      el("td", {}, c.capability_name), el("td", {}, c.capability_version), el("td", {}, c.is_enabled ? "yes" : "no")),
    "no capabilities");
    fill("latest", detail.latest_metrics, (m) => el("tr", {},
      el("td", {}, m.metric_name), el("td", {}, m.metric_value), el("td", {}, m.metric_unit), el("td", {}, time(m.collection_timestamp))),
    "no metrics");
    const history = detail.history.slice().reverse();  // newest first
    document.getElementById("history").replaceChildren(...(history.length ? history.map(historyItem) : [el("li", {}, "no changes recorded")]));
  }

  function shown(value) {
    return value === null || value === undefined ? "-" : typeof value === "string" ? value : JSON.stringify(value);
  }

  function historyItem(event) {
    const what = event.key ? `${event.kind} ${event.key}` : event.kind;
    const moved = event.old === null ? "created" : event.new === null ? "deleted"
      : Object.entries(event.changes).map(([column, [before, after]]) => `${column} ${shown(before)} → ${shown(after)}`).join("; ")
        || "changed (a masked value)";
    return el("li", { "data-revision": event.revision },
      el("span", { class: "muted" }, `#${event.revision} ${time(event.at)} `), el("b", {}, what), ": ",
      el("span", { class: "change" }, moved), el("span", { class: "muted" }, ` by ${event.actor}`));
  }

  async function refreshAgent() {
    const query = agentType ? `?type=${encodeURIComponent(agentType)}` : "";
    detail = await getJSON(`/api/agents/${encodeURIComponent(agentName)}${query}`);
    fetchedAt = Date.now();
    renderAgent();
  }

  const pages = {
    overview: { refresh: refreshOverview, tick: tickOverview },
    agent: { refresh: refreshAgent, tick: tickAgent },
  };
  const current = pages[page];
  if (!current) return;
  current.refresh().catch((error) => console.error(error));
  setInterval(current.tick, 1000);

  // -- live: each change in the change log redraws the page from the API (at most about twice a second) ------------
  let pending = null;
  function changed() {
    if (pending === null) pending = setTimeout(() => { pending = null; current.refresh().catch((e) => console.error(e)); }, 300);
  }
  const stream = new EventSource(page === "agent" ? `/api/events/stream?agent=${encodeURIComponent(agentName)}` : "/api/events/stream");
  const live = document.getElementById("live");
  stream.addEventListener("open", () => { live.classList.add("on"); live.title = "live: following the change log"; });
  stream.addEventListener("error", () => { live.classList.remove("on"); live.title = "reconnecting to the change log"; });
  stream.addEventListener("change", changed);
  stream.addEventListener("open", changed);  // after a reconnect, what changed meanwhile
  // Heartbeats are not in the change log: the overview also reads anew now and then, to see agents come back.
  if (page === "overview") setInterval(changed, 15000);
})();
