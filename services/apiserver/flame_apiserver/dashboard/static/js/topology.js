// The topology of a job drawn as SVG: one box per task, rows by tier (aggregators above the
// roles they aggregate), an edge wherever two tasks share a channel group.
import { s } from "./dom.js";

const BOX_W = 168, BOX_H = 62, GAP_X = 18, ROW_H = 120, PAD = 20;

// Tier of each role: a role that aggregates (funcTags "aggregate"/"distribute") on a channel
// sits one tier above the other end of that channel.
export function roleTiers(schema) {
  const roles = (schema.roles || []).map((r) => r.name);
  const tier = Object.fromEntries(roles.map((r) => [r, 0]));
  const aggregates = (ch, role) => (ch.funcTags?.[role] || []).some((t) => t === "aggregate" || t === "distribute");
  for (let pass = 0; pass < roles.length; pass++) {
    for (const ch of schema.channels || []) {
      const [a, b] = ch.pair || [];
      if (!a || !b || a === b || !(a in tier) || !(b in tier)) continue;
      const [upper, lower] = aggregates(ch, a) && !aggregates(ch, b) ? [a, b] : [b, a];
      tier[upper] = Math.max(tier[upper], tier[lower] + 1);
    }
  }
  return tier;
}

// Pairs of task ids that talk: same channel, both ends of its pair, same group.
export function taskEdges(schema, tasks) {
  const edges = [];
  for (const ch of schema.channels || []) {
    const [a, b] = ch.pair || [];
    for (const x of tasks) {
      for (const y of tasks) {
        if (x.id === y.id || x.role !== a || y.role !== b) continue;
        if (a === b && x.id > y.id) continue;
        const gx = x.groups?.[ch.name], gy = y.groups?.[ch.name];
        if (gx !== undefined && gx === gy) edges.push({ from: x.id, to: y.id, channel: ch.name, group: gx });
      }
    }
  }
  return edges;
}

function groupKey(task) {
  return Object.keys(task.groups || {}).sort().map((k) => task.groups[k]).join("/");
}

export function drawTopology(schema, tasks, nodeNames) {
  const tier = roleTiers(schema);
  const top = Math.max(0, ...Object.values(tier));
  const rows = new Map();
  for (const t of tasks) {
    const row = top - (tier[t.role] ?? 0);
    if (!rows.has(row)) rows.set(row, []);
    rows.get(row).push(t);
  }
  const width = Math.max(...[...rows.values()].map((r) => r.length), 1) * (BOX_W + GAP_X) - GAP_X + 2 * PAD;
  const height = (Math.max(0, ...rows.keys()) + 1) * ROW_H - (ROW_H - BOX_H) + 2 * PAD + 14;
  const at = new Map();
  for (const [row, list] of rows) {
    list.sort((p, q) => groupKey(p).localeCompare(groupKey(q)) || p.role.localeCompare(q.role) || p.index - q.index);
    const span = list.length * (BOX_W + GAP_X) - GAP_X;
    const x0 = (width - span) / 2;
    list.forEach((t, i) => at.set(t.id, { x: x0 + i * (BOX_W + GAP_X), y: PAD + 14 + row * ROW_H }));
  }
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Job topology" });
  for (const e of taskEdges(schema, tasks)) {
    const p = at.get(e.from), q = at.get(e.to);
    const [hi, lo] = p.y <= q.y ? [p, q] : [q, p];
    let d;
    if (hi.y === lo.y) {
      const y = hi.y + BOX_H, dip = 22;
      d = `M${p.x + BOX_W / 2},${y} C${p.x + BOX_W / 2},${y + dip} ${q.x + BOX_W / 2},${y + dip} ${q.x + BOX_W / 2},${y}`;
    } else {
      d = `M${hi.x + BOX_W / 2},${hi.y + BOX_H} L${lo.x + BOX_W / 2},${lo.y}`;
    }
    svg.append(s("path", { class: "edge", d, fill: "none" },
      s("title", {}, `${e.channel} (${e.group})`)));
  }
  for (const t of tasks) {
    const { x, y } = at.get(t.id);
    const node = t.node_id ? nodeNames[t.node_id] || t.node_id : "control plane";
    const attempt = t.attempt > 1 ? ` · attempt ${t.attempt}` : "";
    const summary = `${t.role} ${t.index} on ${node}: ${t.state}${attempt}`;
    svg.append(s("g", { class: `task state-${t.state}`, "data-task-id": t.id, "data-state": t.state, "aria-label": summary },
      s("title", {}, summary),
      s("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6 }),
      s("text", { x: x + 8, y: y + 18, "font-weight": "600" }, `${t.role} #${t.index}`),
      s("text", { x: x + 8, y: y + 35, class: "node-name" }, node),
      s("text", { x: x + 8, y: y + 52, class: "task-state" }, `${t.state}${attempt}`)));
  }
  return svg;
}
