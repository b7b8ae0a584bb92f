// Routes (#/jobs, #/jobs/<id>, #/jobs/<id>/logs, #/nodes, #/models), sign-in and sign-out.
import { ApiError, clearToken, get, setToken, token } from "./api.js";
import { h, notFound } from "./dom.js";
import { jobsPage } from "./jobs.js";
import { jobPage } from "./job.js";
import { logsPage } from "./logs.js";
import { joinPage } from "./join.js";
import { modelsPage } from "./models.js";
import { nodesPage } from "./nodes.js";
import { projectPage, projectsPage } from "./projects.js";

const ROUTES = [
  [/^#\/jobs\/([^/]+)\/logs$/, logsPage, "jobs"],
  [/^#\/jobs\/([^/]+)$/, jobPage, "jobs"],
  [/^#\/nodes$/, nodesPage, "nodes"],
  [/^#\/models$/, modelsPage, "models"],
  [/^#\/projects\/([^/]+)$/, projectPage, "projects"],
  [/^#\/projects$/, projectsPage, "projects"],
  [/^(#\/?|#\/jobs|)$/, jobsPage, "jobs"],
];

let active = null; // AbortController of the page on screen

function main() {
  return document.getElementById("main");
}

function signInForm(message) {
  document.getElementById("who").hidden = true;
  document.title = "Sign in · Flame";
  const input = h("input", { id: "token", type: "password", name: "token", autocomplete: "off", required: true, size: 48 });
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "card", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", { class: "muted" }, "Paste an API token (", h("code", {}, "flamectl token create"),
      "). It is kept in this browser tab only."),
    h("label", { for: "token" }, "API token"), input, " ",
    h("button", { type: "submit", class: "primary" }, "Sign in"), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    try {
      await get("/v1/whoami");
      await route();
    } catch (exc) {
      clearToken();
      error.textContent = exc instanceof ApiError && exc.status === 401 ? "That token was not accepted." : String(exc.message);
    }
  });
  main().replaceChildren(form);
  input.focus();
}

async function route() {
  active?.abort();
  active = new AbortController();
  const joining = location.hash.match(/^#\/join\/([^/]+)$/);
  if (joining) return joinPage(main(), [decodeURIComponent(joining[1])], active.signal);
  if (!token()) return signInForm();
  let me;
  try {
    me = await get("/v1/whoami");
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) {
      clearToken();
      return signInForm("Your session has ended; sign in again.");
    }
    throw exc;
  }
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = `${me.subject} (${me.scope})`;
  const hash = location.hash;
  for (const [pattern, page, nav] of ROUTES) {
    const found = hash.match(pattern);
    if (!found) continue;
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const signal = active.signal;
    try {
      await page(main(), found.slice(1).map(decodeURIComponent), signal);
    } catch (exc) {
      if (signal.aborted) return;
      if (exc instanceof ApiError && exc.status === 404) return notFound(main(), "Page");
      main().replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, exc.message));
    }
    return;
  }
  notFound(main(), "Page");
}

document.getElementById("sign-out").addEventListener("click", () => {
  clearToken();
  location.hash = "#/jobs";
  route();
});
window.addEventListener("hashchange", route);
route();
