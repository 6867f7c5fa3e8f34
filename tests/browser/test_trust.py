"""The job page's Trust panel and the catalog page's repositories, in Chromium, against the real
service with a token. One real build of hello-c with publish=true serves every test of the
module (a module-scoped service, browser and build, all on the module's event loop)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio
from aiohttp import ClientSession
from playwright.async_api import Browser, Page, Route, expect
from pydantic import SecretStr

from orchestrator import Settings

from .. import waiting
from ..conftest import PKGBUILDS, instance_id
from .conftest import Service, chromium, running, screenshot

pytestmark = [
    pytest.mark.docker,
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
]

TOKEN = "trust-s3cret"
BUILD_S = 300.0


@dataclass
class Built:
    service: Service
    job: dict[str, Any]
    fingerprint: str  # as gpg reads the key /repo/key serves
    packages: dict[str, str]  # file name -> sha256 of the bytes the job serves

    async def get(self, path: str) -> bytes:
        async with ClientSession() as http:
            response = await http.get(self.service.url + path, headers=self.service.headers())
            assert response.status == 200, path
            return await response.read()


def gpg_fingerprint(armored: bytes) -> str:
    """The primary key's fingerprint, as gpg reads the armored key (a throwaway home)."""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--with-colons", "--show-keys"],
            input=armored,
            capture_output=True,
            check=True,
            timeout=60,
        )
    fprs = [line.split(":")[9] for line in done.stdout.decode().splitlines() if line[:4] == "fpr:"]
    return fprs[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def built(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> AsyncIterator[Built]:
    root = tmp_path_factory.mktemp("trust")
    (root / "catalog").mkdir()  # an empty catalog: makepkg reads no PKGBUILD at start-up
    settings = Settings(
        data_dir=root / "data",
        instance_id=instance_id(),
        build_cpus=1.0,
        build_memory_bytes=1024**3,
        on_stop="cancel",
        inspect_timeout_s=60.0,
        catalog=str(root / "catalog"),
        api_token=SecretStr(TOKEN),
    )
    async with running(settings, docker_client) as service:
        job_id = await service.submit(PKGBUILDS / "hello-c", publish="true")
        job = await waiting.until(
            lambda: service.job(job_id),
            lambda j: j["status"] not in ("queued", "running"),
            timeout_s=BUILD_S,
            interval_s=0.5,
            what="the build to end",
        )
        assert job["status"] == "succeeded", job
        made = Built(service, job, "", {})
        made.fingerprint = gpg_fingerprint(await made.get("/repo/key"))
        for artifact in job["artifacts"]:
            made.packages[artifact["name"]] = hashlib.sha256(
                await made.get(artifact["url"])
            ).hexdigest()
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def page(module_browser: Browser) -> AsyncIterator[Page]:
    """A tab that already holds the token (as after the prompt); a script error fails."""
    context = await module_browser.new_context(
        viewport={"width": 1000, "height": 800}, accept_downloads=True
    )
    await context.add_init_script(f"sessionStorage.setItem('orchestrator.token', '{TOKEN}')")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert errors == []


def subjects_of(envelope: dict[str, Any]) -> dict[str, str]:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}


async def test_the_job_page_shows_where_it_was_published_and_which_key_signed_it(
    built: Built, page: Page
) -> None:
    job = built.job
    await page.goto(f"{built.service.url}/jobs/{job['id']}")
    signature = page.locator("#trust-signature")
    await expect(signature).to_contain_text("Published to orchestrator-cpu")
    await expect(signature.locator("[data-fingerprint]")).to_have_text(built.fingerprint)
    await expect(signature).to_contain_text("(listed now)")
    await expect(page.locator("#trust-reproduction")).to_contain_text("Not rebuilt yet.")
    await screenshot(page, "job-trust")


async def test_the_provenance_link_saves_an_envelope_naming_the_jobs_packages(
    built: Built, page: Page, tmp_path: Path
) -> None:
    await page.goto(f"{built.service.url}/jobs/{built.job['id']}")
    provenance = page.locator("#trust-provenance")
    await expect(provenance.locator("#provenance-signer")).to_have_text(built.fingerprint)
    # The page checked each subject against the repository's signed database.
    checks = provenance.locator("[data-check]")
    await expect(checks).to_have_count(len(built.packages))
    for name, sha256 in built.packages.items():
        item = provenance.locator(f"li[data-subject='{name}']")
        await expect(item.locator("[data-sha256]")).to_have_text(f"sha256:{sha256}")
        await expect(item.locator("[data-check]")).to_have_attribute("data-check", "match")

    # The link, clicked with a token in the tab, saves the envelope the API serves.
    async with page.expect_download() as saving:
        await provenance.locator("#provenance-link").click()
    saved = tmp_path / "saved.json"
    await (await saving.value).save_as(saved)
    envelope = json.loads(saved.read_text())
    assert subjects_of(envelope) == built.packages
    assert [s["keyid"] for s in envelope["signatures"]] == [built.fingerprint]
    served = await built.get(built.job["provenance_url"])
    assert json.loads(served) == envelope


async def test_a_subject_whose_bytes_differ_is_marked_as_not_matching(
    built: Built, page: Page
) -> None:
    """The check can fail: the same page, with the repository's listing answering another
    digest for the package (routed by the browser, the service untouched)."""
    [name] = built.packages
    listing = json.loads(await built.get(built.job["published"]["repo_url"]))
    for package in listing["packages"]:
        package["sha256"] = "0" * 64

    async def other_digest(route: Route) -> None:
        await route.fulfill(json=listing)

    await page.route(f"**{built.job['published']['repo_url']}", other_digest)
    await page.goto(f"{built.service.url}/jobs/{built.job['id']}")
    check = page.locator(f"#trust-provenance li[data-subject='{name}'] [data-check]")
    await expect(check).to_have_attribute("data-check", "mismatch")
    await expect(check).to_contain_text("differs from the repository's copy")


async def test_the_catalog_page_shows_each_repositorys_address_and_the_key(
    built: Built, page: Page, tmp_path: Path
) -> None:
    url = built.service.url
    await page.goto(f"{url}/catalog")
    box = page.locator("#repositories")
    await expect(box.locator("#repo-fingerprint")).to_have_text(built.fingerprint)
    host = url.removeprefix("http://")
    for variant in ("cpu", "cuda"):
        snippet = box.locator(f"[data-repository='orchestrator-{variant}'] pre")
        await expect(snippet).to_have_text(
            f"[orchestrator-{variant}]\nSigLevel = Required\n"
            f"Server = http://token:TOKEN@{host}/repo/{variant}/x86_64"
        )
    commands = box.locator("#repo-key-commands")
    await expect(commands).to_contain_text(f"pacman-key --lsign-key {built.fingerprint}")
    await expect(commands).to_contain_text(f'-H "Authorization: Bearer $TOKEN" {url}/repo/key')
    await expect(commands).to_contain_text("pacman-key --add orchestrator.asc")
    await screenshot(page, "catalog-repositories")

    async with page.expect_download() as saving:
        await box.locator("#repo-key").click()
    saved = tmp_path / "orchestrator.asc"
    await (await saving.value).save_as(saved)
    assert gpg_fingerprint(saved.read_bytes()) == built.fingerprint


def reproduction(state: str, original: str, rebuild: str) -> dict[str, Any]:
    same = state == "identical"
    return {
        "original": original,
        "rebuild": rebuild,
        "state": state,
        "packages": []
        if state == "running"
        else [
            {
                "name": "hello-c-1.0.0-1-x86_64.pkg.tar.zst",
                "identical": same,
                "original_sha256": "a" * 64,
                "rebuilt_sha256": None if state == "failed" else ("a" if same else "b") * 64,
                "differences": None if same or state == "failed" else "<b>.BUILDINFO</b> differs",
            }
        ],
    }


RENDER_JS = """async ([job, states]) => {
  const { renderReproduction } = await import("/assets/trust.js");
  const main = document.getElementById("main");
  main.replaceChildren();
  for (const state of states) {
    const record = { ...job, reproduction: state && { ...state, original: job.id } };
    const box = document.createElement("section");
    box.dataset.case = state ? state.state : "none";
    box.append(renderReproduction(record, () => { document.body.dataset.asked = "1"; }));
    main.append(box);
  }
  const rebuild = { ...job, id: "r".repeat(32), reproduction: { ...states[2], original: job.id,
    rebuild: "r".repeat(32) } };
  const box = document.createElement("section");
  box.dataset.case = "rebuild";
  box.append(renderReproduction(rebuild, () => {}));
  main.append(box);
}"""


async def test_the_reproduction_panel_draws_every_state(built: Built, page: Page) -> None:
    """The ``repro`` branch's record shape, drawn by the page's own function (the reproduce
    route is not in this branch yet): each state, the links between original and rebuild, the
    Reproduce button where a rebuild may start, differences as text."""
    job = built.job
    rebuild = "f" * 32
    states = [None] + [
        reproduction(s, job["id"], rebuild) for s in ("running", "identical", "differs", "failed")
    ]
    await page.goto(f"{built.service.url}/jobs/{job['id']}")
    await expect(page.locator("#trust")).to_be_visible()
    await page.evaluate(RENDER_JS, [job, states])

    def case(name: str) -> Any:
        return page.locator(f"section[data-case='{name}']")

    await expect(case("none")).to_contain_text("Not rebuilt yet.")
    await expect(case("running")).to_contain_text("Being rebuilt")
    await expect(case("identical")).to_contain_text("Reproducible: the rebuild made identical")
    await expect(case("differs")).to_contain_text("Not reproducible")
    await expect(case("failed")).to_contain_text("The rebuild failed")
    for name in ("running", "identical", "differs", "failed"):
        link = case(name).get_by_role("link", name=rebuild[:12])
        await expect(link).to_have_attribute("href", f"/jobs/{rebuild}")
    await expect(case("rebuild").get_by_role("link", name=job["id"][:12])).to_have_attribute(
        "href", f"/jobs/{job['id']}"
    )
    # Reproduce where a rebuild may start: not while one runs, not on a rebuild itself.
    for name, count in (("none", 1), ("running", 0), ("identical", 1), ("rebuild", 0)):
        await expect(case(name).locator("#reproduce")).to_have_count(count)
    await case("none").locator("#reproduce").click()
    assert await page.evaluate("document.body.dataset.asked") == "1"
    # The package rows: digests, the verdict, the differences as text (no element made).
    row = case("differs").locator("tr[data-package]")
    await expect(row).to_contain_text("✖ no")
    await expect(row).to_contain_text("b" * 64)
    await expect(case("identical").locator("tr[data-package]")).to_contain_text("✔ yes")
    await expect(case("failed").locator("tr[data-package]")).to_contain_text("not built")
    await case("differs").locator("summary").click()
    await expect(case("differs").locator("pre.differences")).to_have_text(
        "<b>.BUILDINFO</b> differs"
    )
    assert await page.locator("main b").count() == 0
    await screenshot(page, "job-reproduction-states")


async def test_reproduce_posts_for_the_job_and_links_the_queued_rebuild(
    built: Built, page: Page
) -> None:
    """The button's request as the ``repro`` branch's route takes it (answered here by the
    browser: that route is not in this branch yet); the page then links the rebuild."""
    job_id = built.job["id"]
    rebuild = "9" * 32
    asked: list[tuple[str, str | None]] = []

    async def queued(route: Route) -> None:
        asked.append((route.request.method, await route.request.header_value("authorization")))
        body = {"job_id": rebuild, "status": "queued", "job_url": "", "sse_url": ""}
        await route.fulfill(status=202, json=body)

    await page.route(f"**/v1/jobs/{job_id}/reproduce", queued)
    await page.goto(f"{built.service.url}/jobs/{job_id}")
    await page.locator("#reproduce").click()
    reproduction = page.locator("#trust-reproduction")
    await expect(reproduction).to_contain_text("Rebuild queued as")
    await expect(reproduction.get_by_role("link", name=rebuild[:12])).to_have_attribute(
        "href", f"/jobs/{rebuild}"
    )
    await expect(page.locator("#reproduce")).to_have_count(0)
    assert asked == [("POST", f"Bearer {TOKEN}")]


async def test_reproduce_from_the_page_rebuilds_and_links_both_ways(
    built: Built, page: Page
) -> None:
    """Last in the module: the real route, a real rebuild; the shared job has a reproduction
    from here on."""
    job_id = built.job["id"]
    await page.goto(f"{built.service.url}/jobs/{job_id}")
    await page.locator("#reproduce").click()
    box = page.locator("#reproduction")
    await expect(box).to_have_attribute(
        "data-state", re.compile("identical|differs"), timeout=BUILD_S * 1000
    )
    job = await built.service.job(job_id)
    reproduction = job["reproduction"]
    await expect(box).to_have_attribute("data-state", reproduction["state"])
    for package in reproduction["packages"]:
        row = box.locator(f"tr[data-package='{package['name']}']")
        await expect(row).to_contain_text(package["original_sha256"])
    await screenshot(page, "job-reproduced")
    rebuild = reproduction["rebuild"]
    await box.get_by_role("link", name=rebuild[:12]).click()
    await page.wait_for_url(f"**/jobs/{rebuild}")
    back = page.locator("#reproduction").get_by_role("link", name=job_id[:12])
    await expect(back).to_have_attribute("href", f"/jobs/{job_id}")
