// Nodes the user may see: presence, last heartbeat, CPU and memory over time (the node's recent
// health samples as a small inline SVG line), labels and the datasets registered on them.
import { all, get } from "./api.js";
import { h, s, stateBadge, when } from "./dom.js";

const SAMPLES = 60;
const W = 120;
const H = 32;

async function healthOf(node) {
  try {
    return (await get(`/v1/nodes/${encodeURIComponent(node.id)}/health?limit=${SAMPLES}`)).items;
  } catch {
    return [];
  }
}

function line(values, cls) {
  const step = values.length > 1 ? W / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(H - (Math.min(100, Math.max(0, v)) / 100) * H).toFixed(1)}`);
  return s("polyline", { class: cls, points: points.join(" "), fill: "none" });
}

function healthCell(samples) {
  if (!samples.length) return h("span", { class: "muted" }, "no sample yet");
  const cpu = samples.map((x) => x.cpu_percent);
  const mem = samples.map((x) => (x.memory_total_bytes ? (100 * x.memory_used_bytes) / x.memory_total_bytes : 0));
  const last = `CPU ${cpu.at(-1).toFixed(0)} %, memory ${mem.at(-1).toFixed(0)} %`;
  return h("div", { class: "health" },
    s("svg", { class: "spark", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${last} (last ${samples.length} samples)` },
      s("title", {}, `CPU (solid) and memory (dashed), last ${samples.length} samples`),
      line(cpu, "spark-cpu"), line(mem, "spark-mem")),
    h("div", { class: "muted" }, last));
}

export async function nodesPage(main, _params, signal) {
  document.title = "Nodes · Flame";
  const [nodes, datasets] = await Promise.all([all("/v1/nodes"), all("/v1/datasets")]);
  if (signal.aborted) return;
  const health = new Map(await Promise.all(nodes.map(async (n) => [n.id, await healthOf(n)])));
  if (signal.aborted) return;
  const byNode = new Map();
  for (const d of datasets) {
    if (!byNode.has(d.node_id)) byNode.set(d.node_id, []);
    byNode.get(d.node_id).push(d);
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name));
  const rows = nodes.map((n) => h("tr", { dataset: { nodeId: n.id } },
    h("td", {}, n.name, h("div", { class: "muted" }, n.id)),
    h("td", {}, stateBadge(n.revoked ? "revoked" : n.presence)),
    h("td", {}, when(n.last_seen)),
    h("td", {}, healthCell(health.get(n.id) || [])),
    h("td", { class: "labels" }, Object.entries(n.labels).map(([k, v]) => h("span", {}, `${k}=${v}`))),
    h("td", {}, (byNode.get(n.id) || []).sort((a, b) => a.name.localeCompare(b.name)).map((d) =>
      h("div", {}, d.name, h("span", { class: "muted" }, ` · ${d.realm || "no realm"} · ${d.format}${d.num_samples ? ` · ${d.num_samples} samples` : ""}`))))));
  main.replaceChildren(h("h1", {}, "Nodes"), nodes.length
    ? h("table", { id: "nodes" }, h("caption", { class: "visually-hidden" }, "Your nodes"),
      h("thead", {}, h("tr", {}, ["Node", "Presence", "Last heartbeat", "CPU / memory", "Labels", "Datasets"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No nodes yet: `flamectl node create` and `flamelet login` enrol one."));
}
