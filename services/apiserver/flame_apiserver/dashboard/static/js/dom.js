// Tiny DOM builders: text always goes in as text nodes, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function stateBadge(state) {
  return h("span", { class: `state state-${state || "unknown"}` }, state || "unknown");
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function say(message) {
  const box = document.getElementById("status");
  box.textContent = message;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { box.textContent = ""; }, 6000);
}

// A page's "not found", unless the user has already gone to another page (a late 404 must not
// replace the page now on screen).
export function notFound(main, what, signal) {
  if (signal?.aborted) return;
  main.replaceChildren(h("h1", {}, `${what} not found`),
    h("p", {}, "It does not exist, or it is not yours to see. ", h("a", { href: "#/jobs" }, "Back to jobs")));
  document.title = "Not found · Flame";
}
