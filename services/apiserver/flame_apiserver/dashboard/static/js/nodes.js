// Nodes the user may see: presence, last heartbeat, labels and the datasets registered on them.
import { all } from "./api.js";
import { h, stateBadge, when } from "./dom.js";

export async function nodesPage(main, _params, signal) {
  document.title = "Nodes · Flame";
  const [nodes, datasets] = await Promise.all([all("/v1/nodes"), all("/v1/datasets")]);
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
    h("td", { class: "labels" }, Object.entries(n.labels).map(([k, v]) => h("span", {}, `${k}=${v}`))),
    h("td", {}, (byNode.get(n.id) || []).sort((a, b) => a.name.localeCompare(b.name)).map((d) =>
      h("div", {}, d.name, h("span", { class: "muted" }, ` · ${d.realm || "no realm"} · ${d.format}${d.num_samples ? ` · ${d.num_samples} samples` : ""}`))))));
  main.replaceChildren(h("h1", {}, "Nodes"), nodes.length
    ? h("table", { id: "nodes" }, h("caption", { class: "visually-hidden" }, "Your nodes"),
      h("thead", {}, h("tr", {}, ["Node", "Presence", "Last heartbeat", "Labels", "Datasets"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No nodes yet: `flamectl node create` and `flamelet login` enrol one."));
}
