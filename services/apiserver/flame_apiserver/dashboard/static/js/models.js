// Your jobs' registered models: versions, aliases and a download per version. Downloads are
// fetched with the bearer token in the header and saved through a Blob URL, never a token URL.
import { ApiError, get, token } from "./api.js";
import { h, say, when } from "./dom.js";

const path = (name) => `/v1/models/${encodeURIComponent(name)}/versions`;

async function download(name, version, button) {
  button.disabled = true;
  say(`Preparing ${name} version ${version}…`);
  try {
    const resp = await fetch(`${path(name)}/${encodeURIComponent(version)}/download`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: "application/zip" },
    });
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch { /* not JSON */ }
      throw new ApiError(resp.status, "", detail);
    }
    const url = URL.createObjectURL(await resp.blob());
    const a = h("a", { href: url, download: `${name}-v${version}.zip`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    say(`Downloaded ${name} version ${version}.`);
  } catch (exc) {
    say(`Download failed: ${exc.message}`);
  } finally {
    button.disabled = false;
  }
}

function versionsTable(model, versions) {
  const rows = versions.map((v) => h("tr", { dataset: { version: v.version } },
    h("td", {}, v.version),
    h("td", { class: "labels" }, v.aliases.map((a) => h("span", {}, `@${a}`))),
    h("td", {}, v.status || "—"),
    h("td", {}, v.created_at_ms ? when(new Date(v.created_at_ms).toISOString()) : "—"),
    h("td", {}, h("code", {}, v.run_id || "—")),
    h("td", {}, h("button", {
      type: "button",
      "aria-label": `Download ${model.name} version ${v.version}`,
      onclick: (ev) => download(model.name, v.version, ev.currentTarget),
    }, "Download"))));
  return h("table", { class: "versions", dataset: { model: model.name } },
    h("caption", { class: "visually-hidden" }, `Versions of ${model.name}`),
    h("thead", {}, h("tr", {}, ["Version", "Aliases", "Status", "Created", "Run", "Model files"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

export async function modelsPage(main, _params, signal) {
  document.title = "Models · Flame";
  let models;
  try {
    models = (await get("/v1/models")).items;
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 409) {
      main.replaceChildren(h("h1", {}, "Models"), h("p", { class: "muted" }, "This platform has no tracking server with accounts, so no registered models."));
      return;
    }
    throw exc;
  }
  const versions = await Promise.all(models.map((m) => get(path(m.name)).then((r) => r.items)));
  if (signal.aborted) return;
  const sections = models.map((m, i) => h("section", { class: "card model", dataset: { model: m.name }, "aria-labelledby": `model-${i}` },
    h("h2", { id: `model-${i}` }, m.name),
    h("p", { class: "muted" }, `Latest version ${m.latest_version || "—"}`,
      Object.keys(m.aliases).length ? ` · aliases ${Object.entries(m.aliases).map(([a, v]) => `@${a} → ${v}`).join(", ")}` : "",
      m.description ? ` · ${m.description}` : ""),
    versionsTable(m, versions[i])));
  main.replaceChildren(h("h1", {}, "Models"), models.length
    ? h("div", { id: "models" }, sections)
    : h("p", { class: "muted" }, "No models yet: a job whose spec registers its model adds one here."));
}
