// #/join/<secret>: open an invitation link. Signed in: join as yourself. Otherwise: choose an
// account name; the new account's API token is shown once and this tab is signed in with it.
import { ApiError, api, setToken, token } from "./api.js";
import { h } from "./dom.js";

function forget() {
  // The secret is used up either way: keep it out of the tab's history.
  history.replaceState(null, "", `${location.pathname}#/projects`);
}

export async function joinPage(main, [secret]) {
  document.title = "Join a project · Flame";
  const signedIn = Boolean(token());
  const error = h("p", { class: "error", role: "alert" });
  const name = h("input", { id: "join-name", name: "name", required: true, autocomplete: "username" });
  const form = h("form", { class: "card", "aria-labelledby": "join-title" },
    h("h1", { id: "join-title" }, "Join a project"),
    signedIn
      ? h("p", {}, "You were invited to a project. Join it as the signed-in user?")
      : [h("p", {}, "You were invited to a project. Choose a name for your new account."),
        h("label", { for: "join-name" }, "Account name"), name, " "],
    h("button", { type: "submit", class: "primary" }, "Join"), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = { secret, name: signedIn ? "" : name.value.trim() };
      const joined = await api("POST", "/v1/invitations/accept", body, { anonymous: !signedIn });
      forget();
      if (!joined.token) {
        location.hash = `#/projects/${encodeURIComponent(joined.project.id)}`;
        return;
      }
      setToken(joined.token.token);
      main.replaceChildren(h("section", { class: "card", "aria-labelledby": "joined-title" },
        h("h1", { id: "joined-title" }, `Welcome, ${joined.user.name}`),
        h("p", {}, "This is your API token. It is shown only now: keep it somewhere safe (you sign in with it, and ",
          h("code", {}, "flamectl login"), " takes it)."),
        h("p", {}, h("code", { id: "new-token" }, joined.token.token)),
        h("p", {}, h("a", { href: `#/projects/${encodeURIComponent(joined.project.id)}`, id: "to-project" }, `Go to project ${joined.project.name}`))));
    } catch (exc) {
      error.textContent = exc instanceof ApiError && exc.status === 404
        ? "This invitation link is not valid: it was already used, revoked, or it expired."
        : exc.message;
    }
  });
  main.replaceChildren(form);
}
