// A project drawn as SVG: the project on top, its members below it, the nodes each member
// brings to the project below them (with live presence), and each node's datasets at the bottom.
import { s } from "./dom.js";

const BOX_W = 150, BOX_H = 46, GAP_X = 16, ROW_H = 96, PAD = 16;

function label(x, y, text, cls) {
  return s("text", { x, y, class: cls }, text.length > 22 ? `${text.slice(0, 21)}…` : text);
}

// Lay out a tree of rows: every item { id, parent, title, sub, kind, state } sits in its row,
// ordered by its parent's position so edges do not cross.
export function layoutRows(rows) {
  const width = Math.max(1, ...rows.map((r) => r.length)) * (BOX_W + GAP_X) - GAP_X + 2 * PAD;
  const at = new Map();
  rows.forEach((row, depth) => {
    row.sort((a, b) => (at.get(a.parent)?.x ?? 0) - (at.get(b.parent)?.x ?? 0) || a.title.localeCompare(b.title));
    const span = row.length * (BOX_W + GAP_X) - GAP_X;
    const x0 = (width - span) / 2;
    row.forEach((item, i) => at.set(item.id, { x: x0 + i * (BOX_W + GAP_X), y: PAD + depth * ROW_H }));
  });
  return { width, height: rows.length * ROW_H - (ROW_H - BOX_H) + 2 * PAD, at };
}

export function drawProjectGraph(project, members, nodes, datasets) {
  const rows = [
    [{ id: `p:${project.id}`, title: project.name, sub: "project", kind: "project" }],
    members.map((m) => ({ id: `u:${m.id}`, parent: `p:${project.id}`, title: m.title, sub: m.role, kind: "member" })),
    nodes.map((n) => ({ id: `n:${n.id}`, parent: `u:${n.owner}`, title: n.name, sub: n.revoked ? "revoked" : n.presence, kind: "node", state: n.revoked ? "revoked" : n.presence })),
    datasets.map((d) => ({ id: `d:${d.id}`, parent: `n:${d.node_id}`, title: d.name, sub: d.format, kind: "dataset" })),
  ].filter((row) => row.length);
  const { width, height, at } = layoutRows(rows);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": `Project ${project.name}: members, nodes and datasets` });
  for (const row of rows) {
    for (const item of row) {
      const p = at.get(item.parent), q = at.get(item.id);
      if (!p) continue;
      svg.append(s("path", { class: "edge", fill: "none", d: `M${p.x + BOX_W / 2},${p.y + BOX_H} L${q.x + BOX_W / 2},${q.y}` }));
    }
  }
  for (const row of rows) {
    for (const item of row) {
      const { x, y } = at.get(item.id);
      const summary = `${item.kind} ${item.title}: ${item.sub}`;
      svg.append(s("g", { class: `vertex ${item.kind}${item.state ? ` state-${item.state}` : ""}`, "data-id": item.id, "data-kind": item.kind, "aria-label": summary },
        s("title", {}, summary),
        s("rect", { x, y, width: BOX_W, height: BOX_H, rx: item.kind === "member" ? 22 : 6 }),
        label(x + 8, y + 18, item.title, "vertex-title"),
        label(x + 8, y + 36, item.sub, "vertex-sub")));
    }
  }
  return svg;
}
