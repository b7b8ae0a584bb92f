// The jobs list (state, start/stop/re-run) and the form that starts a new job.
import { all, get, post } from "./api.js";
import { h, say, stateBadge, when } from "./dom.js";

export const TERMINAL = new Set(["completed", "failed", "terminated"]);

function nextRunName(name, taken) {
  const found = name.match(/^(.*)-(\d+)$/);
  const [base, first] = found ? [found[1], Number(found[2]) + 1] : [name, 2];
  let n = first;
  while (taken.has(`${base}-${n}`)) n++;
  return `${base}-${n}`;
}

// A new job with the same design, code version, spec and project, started at once.
export async function rerun(job) {
  const taken = new Set((await all("/v1/jobs")).map((j) => j.name));
  const created = await post("/v1/jobs", {
    name: nextRunName(job.name, taken), project_id: job.project_id, design_id: job.design_id,
    code_version: job.code_version, spec: job.spec,
  });
  return post(`/v1/jobs/${encodeURIComponent(created.id)}/start`);
}

export function jobActions(job, after) {
  const act = (label, fn) => h("button", {
    type: "button", "aria-label": `${label} ${job.name}`,
    onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        const result = await fn();
        say(`${label}: ${result.name} is ${result.state}`);
        await after(result);
      } catch (exc) {
        say(`${label} failed: ${exc.message}`);
        ev.target.disabled = false;
      }
    },
  }, label);
  const id = encodeURIComponent(job.id);
  return h("span", { class: "actions" },
    job.state === "ready" && job.desired_state !== "running" && act("Start", () => post(`/v1/jobs/${id}/start`)),
    !TERMINAL.has(job.state) && job.desired_state === "running" && act("Stop", () => post(`/v1/jobs/${id}/stop`)),
    TERMINAL.has(job.state) && act("Re-run", () => rerun(job)));
}

async function newJobForm(jobs, signal) {
  const designs = await all("/v1/designs");
  const name = h("input", { id: "job-name", name: "name", required: true, maxlength: 128 });
  const design = h("select", { id: "job-design", name: "design" },
    designs.map((d) => h("option", { value: d.id }, `${d.name} (${d.id})`)));
  const version = h("select", { id: "job-code", name: "code" });
  const spec = h("textarea", { id: "job-spec", name: "spec", rows: 12, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" });
  let chosen = null;
  async function designChosen() {
    if (design.value === chosen) return; // keep what the user typed
    chosen = design.value;
    const versions = design.value ? (await get(`/v1/designs/${encodeURIComponent(design.value)}/code`)).items : [];
    version.replaceChildren(...versions.sort((a, b) => b.version - a.version)
      .map((v) => h("option", { value: v.version }, `v${v.version} · ${v.sha256.slice(0, 12)}`)));
    const last = jobs.filter((j) => j.design_id === design.value).sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""))[0];
    spec.value = JSON.stringify(last ? last.spec : { rounds: 3, datasets: {}, hyperparameters: {} }, null, 2);
  }
  design.addEventListener("change", designChosen);
  if (designs.length) await designChosen();
  const form = h("form", { class: "card", "aria-labelledby": "new-job-title" },
    h("h2", { id: "new-job-title" }, "Start a job"),
    designs.length ? null : h("p", { class: "muted" }, "No designs yet: `flamectl design create` and `flamectl code push` first."),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "job-name" }, "Name"), name),
      h("div", {}, h("label", { for: "job-design" }, "Design"), design),
      h("div", {}, h("label", { for: "job-code" }, "Code version"), version)),
    h("label", { for: "job-spec" }, "Job spec (datasets per group, rounds, hyperparameters…)"), spec,
    h("p", {}, h("button", { type: "submit", class: "primary", disabled: !designs.length }, "Create and start")), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    let body;
    try {
      body = JSON.parse(spec.value);
    } catch (exc) {
      error.textContent = `The spec is not valid JSON: ${exc.message}`;
      return;
    }
    try {
      const job = await post("/v1/jobs", {
        name: name.value.trim(), design_id: design.value, code_version: Number(version.value), spec: body,
      });
      await post(`/v1/jobs/${encodeURIComponent(job.id)}/start`);
      if (!signal.aborted) location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (exc) {
      error.textContent = exc.message;
    }
  });
  return form;
}

export async function jobsPage(main, _params, signal) {
  document.title = "Jobs · Flame";
  const jobs = await all("/v1/jobs");
  jobs.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  const rows = jobs.map((j) => h("tr", { dataset: { jobId: j.id } },
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.name)),
    h("td", {}, stateBadge(j.state)),
    h("td", {}, j.design_id, " v", j.code_version),
    h("td", {}, when(j.created_at)),
    h("td", {}, jobActions(j, () => jobsPage(main, _params, signal)))));
  const table = jobs.length
    ? h("table", {}, h("caption", { class: "visually-hidden" }, "Your jobs"),
      h("thead", {}, h("tr", {}, ["Name", "State", "Design", "Created", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No jobs yet.");
  const form = await newJobForm(jobs, signal);
  if (signal.aborted) return;
  main.replaceChildren(h("h1", {}, "Jobs"), table, form);
}
