// A job: state and actions, per-round curves and the topology, both fed by the job's event
// stream (pushed by the apiserver, never polled by the page), and the task table.
import { ApiError, all, get, stream } from "./api.js";
import { LineChart } from "./chart.js";
import { h, notFound, stateBadge } from "./dom.js";
import { jobActions } from "./jobs.js";
import { drawTopology } from "./topology.js";

function taskTable(tasks, nodeNames) {
  const sorted = [...tasks].sort((a, b) => a.role.localeCompare(b.role) || a.index - b.index);
  return h("table", { id: "tasks" },
    h("caption", { class: "visually-hidden" }, "Tasks of this job"),
    h("thead", {}, h("tr", {}, ["Task", "Node", "Groups", "State", "Attempts", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, sorted.map((t) => h("tr", { dataset: { taskId: t.id } },
      h("td", {}, `${t.role} #${t.index}`, h("div", { class: "muted" }, t.id)),
      h("td", {}, t.node_id ? nodeNames[t.node_id] || t.node_id : "control plane"),
      h("td", {}, Object.entries(t.groups || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
      h("td", {}, stateBadge(t.state)),
      h("td", {}, String(t.attempt)),
      h("td", {}, t.reason || "")))));
}

export async function jobPage(main, [id], signal) {
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return notFound(main, "Job", signal);
    throw exc;
  }
  const [design, nodes, metrics] = await Promise.all([
    get(`/v1/designs/${encodeURIComponent(job.design_id)}`).catch(() => ({ schema: { roles: [], channels: [] } })),
    all("/v1/nodes").catch(() => []),
    get(`/v1/jobs/${encodeURIComponent(id)}/metrics`),
  ]);
  if (signal.aborted) return;
  const nodeNames = Object.fromEntries(nodes.map((n) => [n.id, n.name]));
  document.title = `${job.name} · Flame`;
  const tasks = new Map();
  const charts = new Map();
  const state = h("span", { id: "job-state" }, stateBadge(job.state));
  const actions = h("span", {});
  const reason = h("p", { class: "muted", id: "job-reason" }, job.reason || "");
  const curves = h("div", { class: "grid2", id: "curves" });
  const noCurves = h("p", { class: "muted" }, "No rounds reported yet.");
  const topology = h("div", { class: "topology card", id: "topology" });
  const tableBox = h("div", {});
  const live = h("p", { class: "muted", id: "live", role: "status" }, "Connecting…");
  const links = h("p", {}, h("a", { href: `#/jobs/${encodeURIComponent(id)}/logs` }, "Logs"));
  if (metrics.run_uri) links.append(" · run ", h("code", {}, metrics.run_uri));
  if (metrics.model_uri) links.append(" · model ", h("code", {}, metrics.model_uri));

  const refreshActions = () => actions.replaceChildren(jobActions(job, (result) => {
    if (result.id !== job.id) location.hash = `#/jobs/${encodeURIComponent(result.id)}`;
    else { job = result; state.replaceChildren(stateBadge(job.state)); refreshActions(); }
  }));
  const redrawTasks = () => {
    const list = [...tasks.values()];
    tableBox.replaceChildren(taskTable(list, nodeNames));
    topology.replaceChildren(h("h2", {}, "Topology"), list.length ? drawTopology(design.schema, list, nodeNames) : h("p", { class: "muted" }, "No tasks."));
  };
  const point = (m) => {
    if (!charts.has(m.key)) {
      const chart = new LineChart(m.key);
      charts.set(m.key, chart);
      noCurves.remove();
      curves.append(chart.element);
    }
    charts.get(m.key).add(m.key, m.step, m.value);
  };
  refreshActions();
  redrawTasks();
  main.replaceChildren(
    h("h1", {}, job.name, " ", state), h("div", { class: "row" }, actions), reason, links,
    h("h2", {}, "Curves"), noCurves, curves, live, topology, h("h2", {}, "Tasks"), tableBox);

  const onEvent = (kind, data) => {
    if (kind === "task") { tasks.set(data.id, data); redrawTasks(); }
    else if (kind === "metric") { point(data); charts.get(data.key).render(); }
    else if (kind === "job") {
      job = { ...job, state: data.state, desired_state: data.desired_state, reason: data.reason };
      state.replaceChildren(stateBadge(job.state));
      reason.textContent = job.reason || "";
      refreshActions();
    } else if (kind === "end") live.textContent = `The job has ended (${data.state}).`;
    else if (kind === "error") live.textContent = `Live updates stopped (${data.code}).`;
  };
  for (let delay = 1000; !signal.aborted; delay = Math.min(delay * 2, 30000)) {
    live.textContent = "Live: updates are pushed as they happen.";
    try {
      await stream(`/v1/jobs/${encodeURIComponent(id)}/events?logs=false`, onEvent, signal);
      return;
    } catch (exc) {
      if (signal.aborted) return;
      if (exc instanceof ApiError && exc.status < 500) { live.textContent = `Live updates stopped: ${exc.message}`; return; }
      live.textContent = `Connection lost; retrying in ${delay / 1000} s…`;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
