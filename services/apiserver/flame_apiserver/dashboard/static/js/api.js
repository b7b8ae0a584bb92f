// The REST API as the signed-in user: the token lives in sessionStorage (this tab only).

const TOKEN_KEY = "flame.token";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${token()}`, Accept: "application/json", ...extra };
}

async function failure(resp) {
  let code = "", detail = "";
  try {
    const body = await resp.json();
    code = body.code || "";
    detail = body.detail || body.title || "";
  } catch {
    detail = resp.statusText;
  }
  return new ApiError(resp.status, code, detail);
}

export async function api(method, path, body, { anonymous = false } = {}) {
  const init = { method, headers: headers() };
  if (anonymous) delete init.headers.Authorization;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

// Every page of a list route.
export async function all(path) {
  const items = [];
  let pageToken = "";
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}limit=500${pageToken ? `&page_token=${encodeURIComponent(pageToken)}` : ""}`;
    const page = await get(url);
    items.push(...page.items);
    if (!page.next_page_token) return items;
    pageToken = page.next_page_token;
  }
}

// Server-sent events read with fetch, so the token goes in the Authorization header and never
// in a URL. Calls onEvent(kind, data) per event; resolves when the stream ends.
export async function stream(path, onEvent, signal) {
  const resp = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}
