"""Models on a real stack with the platform's MLflow: a finished job's registered model is
listed, with its versions and aliases, and downloads as a zip of its folder, through REST and
through the dashboard's models page; another tenant gets 404 for all of it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from flame_service.connect import ssl_context
from tests.browser.conftest import open_tab
from tests.browser.test_dashboard import serious_violations, sign_in
from tests.e2e.jobs_harness import Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("stack"), nodes=2, shards=2, mlflow=True)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


@pytest.fixture(scope="module")
def model(cluster: Cluster) -> str:
    """The registered model of a finished job (named for the job and its id)."""
    job = cluster.submit(
        "central", "models-demo", {"default": cluster.datasets}, rounds=2, min_trainers=2
    )
    assert cluster.wait(job) == "completed", cluster.reason(job)
    return f"models-demo-{job[:12]}"


def _api(cluster: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.state.api_url,
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl_context(cluster.state.security()),
        timeout=120,
    )


def _mallory(cluster: Cluster) -> str:
    user = cluster.client.create_user("mallory-models")
    return cluster.client.create_token(user.id).token


def test_the_owner_lists_and_downloads_the_model_and_another_tenant_gets_404(
    cluster: Cluster, model: str
) -> None:
    with _api(cluster, cluster.state.admin_token) as owner:
        listed = owner.get("/v1/models")
        assert listed.status_code == 200, listed.text
        found = {m["name"]: m for m in listed.json()["items"]}
        assert model in found, found
        best = found[model]["aliases"]["best"]
        versions = owner.get(f"/v1/models/{model}/versions").json()["items"]
        assert [v["version"] for v in versions] == sorted(
            (v["version"] for v in versions), key=lambda x: -int(x)
        )
        assert found[model]["latest_version"] == versions[0]["version"]
        assert "best" in next(v for v in versions if v["version"] == best)["aliases"]

        got = owner.get(f"/v1/models/{model}/versions/{best}/download")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/zip"
        assert f'filename="{model}-v{best}.zip"' in got.headers["content-disposition"]
        names = zipfile.ZipFile(io.BytesIO(got.content)).namelist()
        assert all(n.startswith(f"{model}-v{best}/") for n in names), names
        assert f"{model}-v{best}/MLmodel" in names, names
        assert any(n.endswith(".safetensors") for n in names), names

        assert owner.get(f"/v1/models/{model}/versions/999/download").status_code == 404
        assert owner.get("/v1/models/no-such-model/versions").status_code == 404

    with _api(cluster, _mallory(cluster)) as other:
        theirs = other.get("/v1/models")
        assert theirs.status_code == 200, theirs.text
        assert model not in {m["name"] for m in theirs.json()["items"]}
        for path in (
            f"/v1/models/{model}/versions",
            f"/v1/models/{model}/versions/{best}/download",
        ):
            refused = other.get(path)
            assert refused.status_code == 404, (path, refused.text)
            assert refused.json()["code"] == "not_found"


def test_the_models_page_shows_versions_and_aliases_and_downloads_one(
    cluster: Cluster, model: str, browser: Browser, tmp_path: Path
) -> None:
    tab = open_tab(browser)
    page = sign_in(tab, cluster.state.api_url, cluster.state.admin_token)
    page.get_by_role("link", name="Models", exact=True).click()
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    section = page.locator(f'section.model[data-model="{model}"]')
    expect(section.get_by_role("heading", name=model)).to_be_visible()
    best = section.locator("tbody tr", has_text="@best")
    expect(best).to_have_count(1)
    version = best.get_attribute("data-version")
    assert version is not None
    assert serious_violations(page) == []

    with page.expect_download() as pending:
        page.get_by_role("button", name=f"Download {model} version {version}").click()
    download = pending.value
    assert download.suggested_filename == f"{model}-v{version}.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    names = zipfile.ZipFile(saved).namelist()
    assert f"{model}-v{version}/MLmodel" in names, names
    assert not any(".." in n or n.startswith("/") for n in names), names
    # the token went in a header, never into a URL
    assert cluster.state.admin_token not in download.url
    page.screenshot(path=tmp_path / "models.png", full_page=True)
    assert tab.errors == []
