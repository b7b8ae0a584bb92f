// A job's logs: history page by page, then follow (pushed by the event stream); filter by task,
// by source (the tasks' output or a service's events about the job) and by stream.
import { ApiError, get, stream } from "./api.js";
import { h, notFound } from "./dom.js";

const MAX_LINES = 20000;

export async function logsPage(main, [id], signal) {
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return notFound(main, "Job", signal);
    throw exc;
  }
  const tasks = (await get(`/v1/jobs/${encodeURIComponent(id)}/tasks`)).items
    .sort((a, b) => a.role.localeCompare(b.role) || a.index - b.index);
  if (signal.aborted) return;
  document.title = `Logs of ${job.name} · Flame`;
  const names = Object.fromEntries(tasks.map((t) => [t.id, `${t.role}#${t.index}`]));
  const taskSelect = h("select", { id: "log-task" }, h("option", { value: "" }, "All tasks"),
    tasks.map((t) => h("option", { value: t.id }, `${t.role} #${t.index}`)));
  const streamSelect = h("select", { id: "log-stream" }, ["", "stdout", "stderr", "agent"]
    .map((v) => h("option", { value: v }, v || "All streams")));
  const sourceSelect = h("select", { id: "log-source" }, ["", "task", "controller", "notifier", "apiserver"]
    .map((v) => h("option", { value: v }, v ? (v === "task" ? "Tasks" : v) : "All sources")));
  const follow = h("input", { id: "log-follow", type: "checkbox", checked: true });
  const pre = h("pre", { class: "logs", id: "log-lines", tabindex: "0", "aria-label": "Log lines" });
  const count = h("span", { class: "muted", id: "log-count", role: "status" });
  let lastSeq = 0, shown = 0, dropped = 0, following = null;

  const label = (line) => {
    const task = line.task_id ? names[line.task_id] || line.task_id : "";
    if ((line.source || "task") === "task") return `[${task}] `;
    return `[${line.source}${task ? ` ${task}` : ""}] ${line.level} `;
  };
  const append = (lines) => {
    const wanted = streamSelect.value, from = sourceSelect.value;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const line of lines) {
      lastSeq = Math.max(lastSeq, line.seq);
      if (wanted && line.stream !== wanted) continue;
      if (from && (line.source || "task") !== from) continue;
      pre.append(h("span", { class: line.stream,
        dataset: { seq: line.seq, task: line.task_id, source: line.source || "task" } },
      h("span", { class: "task-id" }, label(line)), line.line, "\n"));
      shown++;
    }
    while (pre.childElementCount > MAX_LINES) pre.firstElementChild.remove();
    count.textContent = `${shown} line${shown === 1 ? "" : "s"}`
      + (dropped ? ` · ${dropped} older line${dropped === 1 ? "" : "s"} dropped by retention` : "");
    if (atBottom || follow.checked) pre.scrollTop = pre.scrollHeight;
  };
  const stopFollowing = () => { following?.abort(); following = null; };
  const startFollowing = () => {
    stopFollowing();
    following = new AbortController();
    const both = AbortSignal.any([signal, following.signal]);
    const q = new URLSearchParams({ after_seq: String(lastSeq), task_id: taskSelect.value });
    stream(`/v1/jobs/${encodeURIComponent(id)}/events?${q}`, (kind, data) => {
      if (kind === "log") append([data]);
      if (kind === "end") count.textContent += ` · the job has ended (${data.state})`;
    }, both).catch((exc) => { if (!both.aborted) count.textContent = `Follow stopped: ${exc.message}`; });
  };
  const load = async () => {
    stopFollowing();
    pre.replaceChildren();
    lastSeq = 0; shown = 0;
    for (;;) {
      const q = new URLSearchParams({ after_seq: String(lastSeq), task_id: taskSelect.value, limit: "1000" });
      const page = await get(`/v1/jobs/${encodeURIComponent(id)}/logs?${q}`);
      if (signal.aborted) return;
      dropped = page.dropped || 0;
      append(page.lines);
      if (page.lines.length < 1000) break;
    }
    if (follow.checked) startFollowing();
  };
  taskSelect.addEventListener("change", load);
  streamSelect.addEventListener("change", load);
  sourceSelect.addEventListener("change", load);
  follow.addEventListener("change", () => (follow.checked ? startFollowing() : stopFollowing()));
  signal.addEventListener("abort", stopFollowing);
  main.replaceChildren(
    h("h1", {}, "Logs of ", h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, job.name)),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "log-task" }, "Task"), taskSelect),
      h("div", {}, h("label", { for: "log-source" }, "Source"), sourceSelect),
      h("div", {}, h("label", { for: "log-stream" }, "Stream"), streamSelect),
      h("div", {}, h("label", { for: "log-follow" }, "Follow"), follow),
      count),
    pre);
  await load();
}
