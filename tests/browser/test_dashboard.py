"""The dashboard in Chromium against a real stack (controller, notifier, TLS apiserver, two
flamelets): user A signs in, starts a job from the page, watches its curve gain points and its
topology fill in, follows its logs; user B sees none of it. No console errors; axe-core finds
no serious accessibility violation; screenshots of the job and nodes pages are kept."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.conftest import WAIT_MS, Tab, open_tab
from tests.e2e.jobs_harness import EXAMPLES, Cluster, example_spec, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
ROUNDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as mp:
        # the stack's apiserver looks for changes often, so each round reaches the page alone
        mp.setenv("FLAME_APISERVER_EVENTS_POLL_SECONDS", "0.1")
        c = start_cluster(home, nodes=2, shards=2)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


@pytest.fixture(scope="module")
def design_id(cluster: Cluster) -> str:
    from flame.cli.code import zip_folder

    folder = EXAMPLES / "central"
    design = cluster.client.create_design(
        "browser-central", schema=json.loads((folder / "design.json").read_text())
    )
    cluster.client.push_code(design.id, zip_folder(folder))
    return design.id


@pytest.fixture(scope="module")
def bob_token(cluster: Cluster) -> str:
    bob = cluster.client.create_user("bob", "bob@example.org")
    return cluster.client.create_token(bob.id, "browser test").token


def sign_in(tab: Tab, url: str, token: str) -> Page:
    page = tab.page
    page.goto(f"{url}/dashboard/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    return page


def serious_violations(page: Page) -> list[str]:
    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_user_a_starts_a_job_and_watches_it_live(
    cluster: Cluster, design_id: str, browser: Browser, tmp_path: Path
) -> None:
    tab = open_tab(browser)
    page = sign_in(tab, cluster.state.api_url, cluster.state.admin_token)
    assert serious_violations(page) == []

    # start a job from the page: the form takes a name, design, code version and spec
    spec = example_spec(
        "central",
        {"default": cluster.datasets[:2]},
        rounds=ROUNDS,
        min_trainers=2,
        hyperparameters={"lr": 0.5, "epochs": 200, "batch_size": 32, "hidden": 0},
    )
    page.get_by_label("Name").fill("browser-job")
    page.get_by_label("Design").select_option(design_id)
    expect(page.get_by_label("Code version")).to_have_value("1")
    page.get_by_label("Job spec").fill(json.dumps(spec))
    page.get_by_role("button", name="Create and start").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[^/]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name=re.compile("browser-job"))).to_be_visible()

    # what the page shows, each time its curve or job state changes (set up before round 1)
    page.evaluate(
        """() => {
          window.seen = [];
          const look = () => {
            const fig = document.querySelector('figure[data-metric="accuracy"]');
            const points = fig ? Number(fig.dataset.points) : 0;
            const state = document.querySelector('#job-state')?.textContent;
            const last = window.seen.at(-1);
            if (!last || last.points !== points || last.state !== state)
              window.seen.push({points, state});
          };
          new MutationObserver(look).observe(document.body,
            {subtree: true, childList: true, attributes: true, characterData: true});
          look();
        }"""
    )
    logs_tab = open_tab(browser)  # follow the logs in a second tab while the job runs
    logs = sign_in(logs_tab, cluster.state.api_url, cluster.state.admin_token)
    logs.goto(f"{cluster.state.api_url}/dashboard/#/jobs/{job_id}/logs")
    expect(logs.get_by_label("Follow")).to_be_checked()

    expect(page.locator("#job-state")).to_have_text("completed", timeout=240_000)
    steps = {m.step for m in cluster.client.get_metrics(job_id).metrics if m.key == "accuracy"}
    assert len(steps) >= ROUNDS  # (step 0 is the initial model's evaluation)
    chart = page.locator('figure[data-metric="accuracy"]')
    expect(chart).to_have_attribute("data-points", str(len(steps)))
    assert page.locator('figure[data-metric="accuracy"] svg circle').count() == len(steps)
    seen = page.evaluate("window.seen")
    counts = [s["points"] for s in seen]
    assert counts == sorted(counts), seen
    # pushed as the rounds ended: the curve grew in several steps, the first while running
    assert len({c for c in counts if c > 0}) >= ROUNDS - 1, seen
    assert any(0 < s["points"] < len(steps) and s["state"] == "running" for s in seen), seen

    # the topology: every task of the job, with its node and its live state
    tasks = cluster.client.list_tasks(job_id)
    names = {n.id: n.name for n in cluster.client.list_nodes()}
    boxes = page.locator("#topology g.task")
    expect(boxes).to_have_count(len(tasks))
    for t in tasks:
        box = page.locator(f'#topology g.task[data-task-id="{t.id}"]')
        expect(box).to_have_attribute("data-state", "completed")
        node = names[t.node_id] if t.node_id else "control plane"
        expect(box.locator(".node-name")).to_have_text(node)
        row = page.locator(f'#tasks tr[data-task-id="{t.id}"]')
        expect(row).to_contain_text(node)
        expect(row).to_contain_text("completed")
    assert page.locator("#topology path.edge").count() == len(tasks) - 1  # a star: central
    page.screenshot(path=tmp_path / "job.png", full_page=True)
    assert serious_violations(page) == []

    # the followed logs: everything the API has for the job, in order, and a task filter.
    # The tasks' own lines are all in when the job ends; the services' events about its end
    # may still be on their way, so the comparison is over the tasks' lines.
    every = []
    after = 0
    while batch := cluster.client.get_logs(job_id, after_seq=after, limit=1000).lines:
        every += batch
        after = batch[-1].seq
    every = [x for x in every if x.source == "task"]
    assert every, "the job logged nothing"
    lines = logs.locator("#log-lines > span")
    logs.get_by_label("Source").select_option("task")
    expect(lines).to_have_count(len(every), timeout=WAIT_MS)
    shown = [int(x) for x in lines.evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert shown == [x.seq for x in every]
    trainer = next(t for t in tasks if t.role == "trainer")
    logs.get_by_label("Task").select_option(trainer.id)
    mine = [x for x in every if x.task_id == trainer.id]
    expect(lines).to_have_count(len(mine))
    assert set(lines.evaluate_all("els => els.map(e => e.dataset.task)")) == {trainer.id}
    logs.screenshot(path=tmp_path / "logs.png")
    assert serious_violations(logs) == []
    # the controller's own events about the job, on the same page
    logs.get_by_label("Task").select_option("")
    logs.get_by_label("Source").select_option("controller")
    expect(lines.first).to_be_visible(timeout=WAIT_MS)
    assert set(lines.evaluate_all("els => els.map(e => e.dataset.source)")) == {"controller"}
    expect(lines.first).to_contain_text("[controller")

    # re-run, then stop the new run, from its page
    page.get_by_role("button", name="Re-run browser-job").click()
    expect(page).not_to_have_url(re.compile(f"#/jobs/{job_id}$"))
    rerun_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name=re.compile("browser-job-2"))).to_be_visible()
    page.get_by_role("button", name="Stop browser-job-2").click()
    expect(page.locator("#job-state")).to_have_text(
        re.compile("stopping|terminated|completed"), timeout=WAIT_MS
    )
    assert cluster.client.get_job(rerun_id).desired_state == "stopped"

    # nodes: presence, labels and the datasets registered on each
    page.goto(f"{cluster.state.api_url}/dashboard/#/nodes")
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(len(cluster.state.nodes))
    for name in cluster.datasets:
        expect(page.locator("#nodes")).to_contain_text(name)
    expect(page.locator("#nodes .state-online")).to_have_count(len(cluster.state.nodes))
    # CPU and memory over time: each node's recent health samples as an inline SVG line
    sparks = page.locator("#nodes svg.spark")
    expect(sparks).to_have_count(len(cluster.state.nodes))
    expect(sparks.first).to_have_attribute("aria-label", re.compile(r"^CPU \d+ %, memory \d+ %"))
    assert page.locator("#nodes polyline.spark-mem").count() == len(cluster.state.nodes)
    page.screenshot(path=tmp_path / "nodes.png", full_page=True)
    assert serious_violations(page) == []

    assert tab.errors == [] and logs_tab.errors == []
    if os.environ.get("FLAME_UPDATE_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "job.png", DOCS_IMAGES / "dashboard-job.png")
        shutil.copy(tmp_path / "nodes.png", DOCS_IMAGES / "dashboard-nodes.png")


def test_user_b_sees_none_of_user_a_and_a_urls_are_not_found(
    cluster: Cluster, design_id: str, bob_token: str, browser: Browser
) -> None:
    job_id = cluster.create(
        "central", "alice-private", {"default": cluster.datasets[:2]}, rounds=ROUNDS, min_trainers=2
    )
    tab = open_tab(browser)
    page = sign_in(tab, cluster.state.api_url, bob_token)
    expect(page.get_by_text("No jobs yet.")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("alice-private")
    page.goto(f"{cluster.state.api_url}/dashboard/#/jobs/{job_id}")
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
    page.goto(f"{cluster.state.api_url}/dashboard/#/jobs/{job_id}/logs")
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
    page.goto(f"{cluster.state.api_url}/dashboard/#/nodes")
    expect(page.get_by_text("No nodes yet")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    # a 404 answer is logged by Chromium as a failed resource load; nothing else may be
    errors = [e for e in tab.errors if "404" not in e]
    assert errors == []


def test_a_late_not_found_does_not_replace_the_page_the_user_went_on_to(
    cluster: Cluster, bob_token: str, browser: Browser
) -> None:
    """A job's 404 that comes back after the user has gone to another page leaves that page
    on screen (CI once saw "Job not found" over the nodes page)."""
    tab = open_tab(browser)
    page = sign_in(tab, cluster.state.api_url, bob_token)
    held: list[Route] = []
    page.route(re.compile(r"/v1/jobs/[^/?]+$"), lambda route: held.append(route))
    page.goto(f"{cluster.state.api_url}/dashboard/#/jobs/no-such-job/logs")
    for _ in range(WAIT_MS // 50):  # until the request is held (handlers run while we wait)
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the job's request never came"
    page.goto(f"{cluster.state.api_url}/dashboard/#/nodes")
    expect(page.get_by_text("No nodes yet")).to_be_visible()
    with page.expect_request_finished(lambda r: "/v1/jobs/no-such-job" in r.url):
        held[0].continue_()
    # two turns of the page's event loop: the 404's body is read, then its handler runs
    page.evaluate("new Promise((r) => setTimeout(() => setTimeout(r, 0), 0))")
    assert page.get_by_role("heading", name="Job not found").count() == 0
    expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
