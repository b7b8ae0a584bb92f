// Projects: the list (and a form to create one), and a project's page: its members, the nodes
// and datasets they bring drawn as a graph with live presence, and invitations for the owner.
import { ApiError, all, api, get, post } from "./api.js";
import { h, notFound, say, when } from "./dom.js";
import { drawProjectGraph } from "./graph.js";

const PRESENCE_REFRESH_MS = 5000;

export async function projectsPage(main, _params, signal) {
  document.title = "Projects · Flame";
  const projects = await all("/v1/projects");
  if (signal.aborted) return;
  const name = h("input", { id: "project-name", name: "name", required: true });
  const form = h("form", { class: "card row", "aria-label": "Create a project" },
    h("div", {}, h("label", { for: "project-name" }, "New project"), name),
    h("button", { type: "submit", class: "primary" }, "Create"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const created = await post("/v1/projects", { name: name.value.trim(), description: "" });
      location.hash = `#/projects/${encodeURIComponent(created.id)}`;
    } catch (exc) {
      say(`Create failed: ${exc.message}`);
    }
  });
  projects.sort((a, b) => a.name.localeCompare(b.name));
  main.replaceChildren(h("h1", {}, "Projects"), form, projects.length
    ? h("table", { id: "projects" }, h("caption", { class: "visually-hidden" }, "Your projects"),
      h("thead", {}, h("tr", {}, ["Project", "Owner", "Members", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, projects.map((p) => h("tr", { dataset: { projectId: p.id } },
        h("td", {}, h("a", { href: `#/projects/${encodeURIComponent(p.id)}` }, p.name)),
        h("td", {}, p.owner), h("td", {}, String(p.members.length)), h("td", {}, when(p.created_at))))))
    : h("p", { class: "muted" }, "No projects yet."));
}

function invitationsCard(project, refresh) {
  const out = h("p", { id: "invite-link", class: "muted", "aria-live": "polite" });
  const note = h("input", { id: "invite-note", name: "note", maxlength: 200 });
  const form = h("form", { class: "row", "aria-label": "Invite a collaborator" },
    h("div", {}, h("label", { for: "invite-note" }, "Invite (note: whom it is for)"), note),
    h("button", { type: "submit", class: "primary" }, "Create invitation link"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const issued = await post(`/v1/projects/${encodeURIComponent(project.id)}/invitations`, { note: note.value });
      const url = new URL(issued.link, location.href).href;
      out.replaceChildren("Send this link (it works once, until ", when(issued.invitation.expires_at), "): ",
        h("code", { id: "invite-url" }, url));
      await refresh();
    } catch (exc) {
      say(`Invitation failed: ${exc.message}`);
    }
  });
  const table = h("tbody", {});
  const card = h("section", { class: "card", "aria-labelledby": "inv-title" },
    h("h2", { id: "inv-title" }, "Invitations"), form, out,
    h("table", { id: "invitations" }, h("caption", { class: "visually-hidden" }, "Invitations"),
      h("thead", {}, h("tr", {}, ["Note", "Expires", "State", ""].map((c) => h("th", { scope: "col" }, c)))), table));
  card.fill = (invitations) => table.replaceChildren(...invitations.map((i) => {
    const state = i.used_by ? `used by ${i.used_by}` : i.revoked ? "revoked" : new Date(i.expires_at) < new Date() ? "expired" : "open";
    const revoke = state === "open" ? h("button", { type: "button", "aria-label": `Revoke invitation ${i.note || i.id}`, onclick: async () => {
      await api("DELETE", `/v1/invitations/${encodeURIComponent(i.id)}`);
      await refresh();
    } }, "Revoke") : "";
    return h("tr", {}, h("td", {}, i.note || "—"), h("td", {}, when(i.expires_at)), h("td", {}, state), h("td", {}, revoke));
  }));
  return card;
}

export async function projectPage(main, [projectId], signal) {
  const me = await get("/v1/whoami");
  const id = encodeURIComponent(projectId);
  let project;
  try {
    project = await get(`/v1/projects/${id}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return notFound(main, "Project", signal);
    throw exc;
  }
  if (signal.aborted) return;
  document.title = `${project.name} · Projects · Flame`;
  const owner = me.subject === project.owner || me.scope === "admin";
  const graph = h("div", { class: "topology", id: "project-graph" });
  const memberList = h("ul", { id: "members" });
  const membersOf = (p) => [p.owner, ...p.members].map((uid) => ({
    id: uid, role: uid === p.owner ? "owner" : "member",
    title: uid === me.subject ? "you" : uid.slice(0, 12),
  }));
  let invitations = null;
  const refreshInvitations = async () => {
    if (invitations) invitations.fill(await all(`/v1/projects/${id}/invitations`));
  };
  if (owner) invitations = invitationsCard(project, refreshInvitations);
  main.replaceChildren(h("h1", {}, project.name), project.description ? h("p", {}, project.description) : "",
    h("section", { class: "card", "aria-labelledby": "graph-title" }, h("h2", { id: "graph-title" }, "Members, nodes and datasets"), graph,
      h("p", { class: "muted" }, "Members, nodes and their presence refresh every few seconds.")),
    h("section", { class: "card", "aria-labelledby": "members-title" }, h("h2", { id: "members-title" }, "Members"), memberList),
    invitations || "");
  await refreshInvitations();
  // Members, nodes, datasets and presence are read again every few seconds.
  const draw = async () => {
    const [current, nodes, datasets] = await Promise.all([
      get(`/v1/projects/${id}`), all(`/v1/nodes?project_id=${id}`), all(`/v1/datasets?project_id=${id}`)]);
    if (signal.aborted) return;
    const members = membersOf(current);
    memberList.replaceChildren(...members.map((m) =>
      h("li", { dataset: { userId: m.id } }, `${m.title} (${m.role})`, h("span", { class: "muted" }, ` ${m.id}`))));
    const shown = nodes.filter((n) => n.project_id === project.id);
    const nodeIds = new Set(shown.map((n) => n.id));
    graph.replaceChildren(drawProjectGraph(current, members, shown, datasets.filter((d) => nodeIds.has(d.node_id))));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), PRESENCE_REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
