"""The dashboard's static files: served under /dashboard/ with a strict CSP, complete (every
module a page imports is there), and nothing that would reach outside the apiserver."""

from __future__ import annotations

import re

from flame_apiserver.dashboard import STATIC

IMPORT = re.compile(r"""^import .* from "(\./[\w.-]+\.js)";$""", re.M)


async def test_the_page_is_served_with_a_csp_that_allows_only_this_origin(api) -> None:
    resp = await api.client.get("/dashboard")
    assert resp.status_code == 308 and resp.headers["location"] == "/dashboard/"
    resp = await api.client.get("/dashboard/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/main.js">' in resp.text
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"


async def test_every_module_the_page_imports_is_served_as_javascript(api) -> None:
    pending, seen = ["main.js"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        resp = await api.client.get(f"/dashboard/js/{name}")
        assert resp.status_code == 200, name
        assert "javascript" in resp.headers["content-type"]
        pending += [m.removeprefix("./") for m in IMPORT.findall(resp.text)]
    on_disk = {p.name for p in (STATIC / "js").glob("*.js")}
    assert seen == on_disk  # nothing unused, nothing missing
    assert (await api.client.get("/dashboard/app.css")).status_code == 200


async def test_no_file_refers_to_anything_outside_the_apiserver() -> None:
    for path in STATIC.rglob("*"):
        if path.is_file():
            text = path.read_text()
            urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
            assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)


async def test_files_outside_the_static_folder_are_not_served(api) -> None:
    for path in ("/dashboard/../app.py", "/dashboard/%2e%2e/__init__.py", "/dashboard/nope.js"):
        resp = await api.client.get(path)
        assert resp.status_code == 404, path
        assert "create_app" not in resp.text
