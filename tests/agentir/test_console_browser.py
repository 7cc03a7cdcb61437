"""The web console in a real headless Chromium (Playwright) against a real daemon on loopback:
token, upload, live progress, the search tree, before/after images, bad input, a dropped WebSocket.

Chromium comes from Debian (``/usr/bin/chromium``, installed by ``.ci/run``; ``AGENTIR_CHROMIUM``
names another binary); the module skips with one line when it or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import pytest_asyncio
import torch

from agentir.daemon.app import Daemon, run_daemon
from agentir.daemon.config import DaemonConfig
from agentir.toolbox.base import ToolInfo, register_tool, unregister_tool

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed (pip install -e '.[test]')")


def _chromium() -> str | None:
    for candidate in (os.environ.get("AGENTIR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set AGENTIR_CHROMIUM)"),
    pytest.mark.asyncio(loop_scope="module"),
]

ROOT = Path(__file__).resolve().parents[2]
DEGRADED = ROOT / "examples" / "degraded" / "astronaut.png"  # one quick jpeg step
TIMEOUT_MS = 30_000
#: Where the tests leave their screenshots for people to look at (git-ignored).
SHOTS = Path(os.environ.get("AGENTIR_SCREENSHOTS", ROOT / "out" / "screenshots"))


async def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in ``tmp_path`` and a copy in :data:`SHOTS`; returns the first."""
    path = tmp_path / name
    await page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / name)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (each test gets its own context: no shared storage)."""
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


class PageLog:
    """The page's console errors, uncaught exceptions and CSP violations: a test fails on any."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def only(self, *allowed: str) -> list[str]:
        """The errors that contain none of ``allowed`` (expected failures, e.g. a 401 answer)."""
        return [e for e in self.errors if not any(a in e for a in allowed)]


@asynccontextmanager
async def session(browser: Any, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Daemon, Any, PageLog]]:
    config = DaemonConfig(**{"port": 0, "data": tmp_path / "data", "min_free_bytes": 0, **overrides})
    async with run_daemon(config) as daemon:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        log = PageLog(page)
        try:
            yield daemon, page, log
        finally:
            await context.close()


async def notice(page: Any, *needles: str) -> str:
    """Wait for a notice on the page containing every needle; return its text."""
    selector = ".notice" + "".join(f":has-text({json.dumps(n, ensure_ascii=False)})" for n in needles)
    return str(await page.locator(selector).first.inner_text())


async def wait_images_loaded(page: Any, selector: str) -> int:
    """Wait until every image matching ``selector`` decoded (naturalWidth > 0); return how many."""
    await page.wait_for_function(
        "sel => { const all = [...document.querySelectorAll(sel)]; return all.length > 0 && all.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )
    return int(await page.locator(selector).count())


async def post_image(daemon: Daemon, *, token: str = "", options: dict[str, Any] | None = None) -> str:
    """Submit the degraded example over HTTP (not through the page); returns the job id."""
    headers = {"Content-Type": "image/png", **({"Authorization": f"Bearer {token}"} if token else {})}
    params = {"options": json.dumps(options)} if options else {}
    async with aiohttp.ClientSession(base_url=daemon.url) as http, http.post("/v1/jobs", data=DEGRADED.read_bytes(), headers=headers, params=params) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["id"])


# ----------------------------------------------------------------------------- the main path
async def test_token_upload_live_progress_tree_and_before_after(browser, tmp_path):
    """With a token: the page asks for it and shows no job until given; then an upload shows progress, the plan, the tree with thumbnails and both images."""
    async with session(browser, tmp_path, token="s3cret") as (daemon, page, log):
        earlier = await post_image(daemon, token="s3cret")  # a job that exists before the page opens
        await page.goto(f"{daemon.url}/#/jobs")
        await page.locator("#login").wait_for(state="visible")
        assert "requires a token" in await page.locator("#login-message").inner_text()
        assert earlier not in await page.content()  # the list is not shown without the token

        await page.fill("#token", "wrong")
        await page.click("#login button[type=submit]")
        await page.locator("#login-message", has_text="That token was refused").wait_for()
        assert earlier not in await page.content()

        await page.fill("#token", "s3cret")
        await page.click("#login button[type=submit]")
        await page.locator(f"#jobs tr[data-job='{earlier}']").wait_for()

        await page.goto(f"{daemon.url}/#/")  # the token stays for the tab (sessionStorage)
        await page.locator("#new-job").wait_for()
        policies = await page.locator("#policy option").all_inner_texts()
        assert "experience" in policies and "llm (unavailable)" in policies
        await page.set_input_files("#file", str(DEGRADED))
        await page.click("#submit")
        await page.wait_for_url("**/#/jobs/*")
        job = page.url.rsplit("/", 1)[1]
        await page.locator("#main[data-loaded='done']").wait_for()
        assert await page.locator("#job-state").inner_text() == "done"
        assert await page.locator("#plan .chip").count() >= 1
        nodes = await page.locator("#tree li.node").count()
        assert nodes >= 2 and await page.locator("#tree li.node.final").count() == 1
        thumbs = await wait_images_loaded(page, "#tree img.thumb")
        trace = (await (await page.request.get(f"{daemon.url}/v1/jobs/{job}", headers={"Authorization": "Bearer s3cret"})).json())["trace"]
        assert thumbs == len(trace["steps"]) == await page.locator("#tree figure.cand").count()
        assert await wait_images_loaded(page, "#img-before, #img-after") == 2
        after_w = await page.evaluate("document.querySelector('#img-after').naturalWidth")
        assert after_w == trace.get("width", after_w) or after_w >= 256
        await page.fill("#cmp-slider", "20")
        await page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the full-page shot
        assert (await screenshot(page, tmp_path, "console.png")).stat().st_size > 10_000

        daemon.config.token = "rotated"  # the token expires: the daemon now wants another one
        await page.goto(f"{daemon.url}/#/jobs")
        await page.locator("#login").wait_for(state="visible")
        assert "no longer accepts your token" in await page.locator("#login-message").inner_text()
        assert job not in await page.locator("#main").inner_html()
        assert log.only("401") == []


#: Five known degradations, every tool of each run at once and judged strictly: a 20-step trace.
TWENTY_STEPS = {"subtasks": ["noise", "jpeg", "haze", "dark", "rain"], "wave": 0, "reflection": "threshold"}


async def test_first_paint_and_no_layout_shift_while_a_20_step_tree_loads(browser, tmp_path):
    """Reports the console's first contentful paint on loopback (no assertion on time); a 20-step trace's page does not shift while its thumbnails load."""
    async with session(browser, tmp_path) as (daemon, page, log):
        job = await post_image(daemon, options=TWENTY_STEPS)
        await page.goto(f"{daemon.url}/")  # warm: the browser's caches, the daemon's file cache
        await page.locator("#new-job").wait_for()
        await page.add_init_script(
            "window.__shift = 0; new PerformanceObserver(l => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.__shift += e.value; })"
            ".observe({type: 'layout-shift', buffered: true});"
        )
        await page.goto(f"{daemon.url}/?fresh=1#/jobs/{job}")  # a new document (a hash change alone is not)
        await page.locator("#main[data-loaded='done']").wait_for()
        assert await wait_images_loaded(page, "#tree img.thumb") >= 20
        await wait_images_loaded(page, "#img-before, #img-after")
        paint = await page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
        shift = await page.evaluate("window.__shift")
        (tmp_path / "first_paint.json").write_text(json.dumps({"first_contentful_paint_ms": paint, "layout_shift": shift}))
        print(f"console first contentful paint on loopback: {paint:.0f} ms; cumulative layout shift after load: {shift:.4f}")
        assert paint > 0
        assert shift < 0.1  # "good" by the Web Vitals scale: thumbnails arrive into fixed-size boxes
        assert log.only() == []


# ----------------------------------------------------------------------------- bad input
async def test_bad_uploads_and_an_unknown_job_get_a_clear_message(browser, tmp_path):
    """A text file, an image over the upload limit and an unknown job id each get a one-line message naming the input."""
    async with session(browser, tmp_path, max_body_bytes=40_000) as (daemon, page, log):
        await page.goto(f"{daemon.url}/")
        await page.locator("#new-job").wait_for()
        await page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image at all\n" * 10}])
        await page.click("#submit")
        text = await notice(page, "notes.txt was refused")
        assert "not a supported image" in text and "send the encoded image file" in text

        big = ROOT / "examples" / "clean" / "coffee.png"
        assert big.stat().st_size > 40_000
        await page.set_input_files("#file", str(big))
        await page.click("#submit")
        text = await notice(page, "coffee.png is", "over this daemon's upload limit")
        assert "downscale or recompress" in text
        assert await page.locator(".upload.error").count() == 2
        async with aiohttp.ClientSession(base_url=daemon.url) as http, http.get("/v1/jobs") as r:
            assert (await r.json())["jobs"] == []  # neither reached the queue

        missing = "0" * 32
        await page.goto(f"{daemon.url}/#/jobs/{missing}")
        await page.locator("#job-missing").wait_for()
        assert missing in await page.locator("#job-missing").inner_text()
        await notice(page, f"Job “{missing}” does not exist")
        await page.goto(f"{daemon.url}/#/jobs/not-a-job")
        await page.locator("#job-missing:has-text('not-a-job')").wait_for()
        assert log.only("415", "404") == []


# ----------------------------------------------------------------------------- a dropped WebSocket
class HeldTool:
    """A real denoising 'tool' that holds its call until the test releases it (identity output)."""

    name = "test_console_held_denoise"
    degradation = "noise"
    scale = 1
    device = "cpu"
    entered = threading.Event()
    release = threading.Event()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        HeldTool.entered.set()
        HeldTool.release.wait(60)
        return batch


@pytest.fixture
def held_tool():
    """Registers HeldTool for one test; releases it and unregisters it afterwards."""
    HeldTool.entered.clear()
    HeldTool.release.clear()
    register_tool(ToolInfo(name=HeldTool.name, degradation="noise", description="held (tests)"), HeldTool)
    yield {"tools": {"noise": [HeldTool.name]}, "subtasks": ["noise"]}
    HeldTool.release.set()
    unregister_tool(HeldTool.name)


async def test_a_dropped_websocket_reconnects_and_the_job_page_resumes(browser, tmp_path, held_tool):
    """The daemon drops the page's WebSocket mid-job: the page says so, reconnects, watches again and shows the job finish."""
    async with session(browser, tmp_path) as (daemon, page, log):
        job = await post_image(daemon, options=held_tool)
        with anyio.fail_after(30):
            assert await anyio.to_thread.run_sync(HeldTool.entered.wait, 30)
        await page.goto(f"{daemon.url}/#/jobs/{job}")
        await page.locator("#main[data-loaded='live']").wait_for()
        await page.locator("body[data-live='open']").wait_for()
        assert await page.locator("#job-state").inner_text() == "running"

        sockets = list(daemon.sockets)
        assert len(sockets) == 1
        await sockets[0].close(code=1012, message=b"test: connection dropped")
        await notice(page, "Live progress paused", "dropped")
        await page.locator("body[data-live='open']").wait_for()
        await notice(page, "Live feed reconnected")
        assert len(daemon.sockets) == 1 and next(iter(daemon.sockets)) is not sockets[0]

        HeldTool.release.set()
        await page.locator("#main[data-loaded='done']").wait_for()  # the result came over the new socket
        assert await page.locator("#job-state").inner_text() == "done"
        await wait_images_loaded(page, "#img-before, #img-after")
        assert log.only() == []


# ----------------------------------------------------------------------------- the job list
async def test_job_list_pages_and_filters_by_state(browser, tmp_path):
    """23 queued jobs: the list shows 20 newest with a link to older ones, pages back, and the state filter narrows it."""
    async with session(browser, tmp_path, max_per_client=64) as (daemon, page, log):
        daemon.worker.pause()  # the jobs stay queued: the list is what is tested, not restoration
        jobs = [await post_image(daemon) for _ in range(23)]
        await page.goto(f"{daemon.url}/#/jobs")
        await page.locator("#jobs tbody tr").first.wait_for()
        assert await page.locator("#jobs tbody tr").count() == 20
        assert await page.locator("#jobs tbody tr").first.get_attribute("data-job") == jobs[-1]  # newest first
        await page.click("#page-older")
        await page.locator(f"#jobs tr[data-job='{jobs[0]}']").wait_for()
        assert await page.locator("#jobs tbody tr").count() == 3 and await page.locator("#page-older").count() == 0
        await page.click("#page-newer")
        await page.locator(f"#jobs tr[data-job='{jobs[-1]}']").wait_for()
        await page.select_option("#state-filter", "done")
        await page.locator("#jobs-empty", has_text="No done jobs.").wait_for()
        assert "state=done" in page.url
        await page.select_option("#state-filter", "queued")
        await page.locator("#jobs tbody tr").first.wait_for()
        assert await page.locator("#jobs tbody tr[data-state='queued']").count() == 20
        assert log.only() == []


async def test_several_images_at_once_each_get_a_job_and_live_state(browser, tmp_path):
    """Picking two images queues two jobs; the upload list links each and shows it done from the live feed."""
    async with session(browser, tmp_path) as (daemon, page, log):
        await page.goto(f"{daemon.url}/")
        await page.locator("#new-job").wait_for()
        await page.set_input_files("#file", [str(DEGRADED), str(ROOT / "examples" / "degraded" / "coffee.png")])
        assert "astronaut.png" in await page.locator("#picked").inner_text()
        await page.select_option("#policy", "rules")
        await page.click("#submit")
        for name in ("astronaut.png", "coffee.png"):
            await page.locator(f".upload[data-name='{name}'][data-state='done'] a").wait_for()
        links = await page.locator(".upload a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
        assert len(links) == 2 and all(link.startswith("#/jobs/") for link in links)
        async with aiohttp.ClientSession(base_url=daemon.url) as http, http.get("/v1/jobs") as r:
            jobs = (await r.json())["jobs"]
        assert {j["policy"] for j in jobs} == {"rules"} and {j["state"] for j in jobs} == {"done"} and len(jobs) == 2
        await page.click(".upload[data-name='coffee.png'] a")
        await page.locator("#main[data-loaded='done']").wait_for()
        assert log.only() == []


async def test_a_live_stream_shows_its_latest_frame_fps_and_drops(browser, tmp_path):
    """A stream sent to /v1/stream appears on #/streams with a preview of its restored frames, a
    live fps and its counters; when it ends, its card goes and the page says none is open."""
    from test_stream_helpers import darken, pan

    from agentir.bus.codec import encode
    from agentir.stream.messages import StreamEnd, StreamFrameIn, StreamStart

    frames = darken(pan("rocket", 8))
    h, w = frames[0].shape[:2]
    async with session(browser, tmp_path) as (daemon, page, log), aiohttp.ClientSession() as http:
        await page.goto(f"{daemon.url}/#/streams")
        await page.locator("#streams-empty").wait_for(state="visible")
        async with http.ws_connect(daemon.url + "/v1/stream") as ws:
            stop = anyio.Event()

            async def send() -> None:
                await ws.send_bytes(encode(StreamStart(reperceive_every=0, output="jpeg")))
                i = 0
                while not stop.is_set() and i < 600:
                    await ws.send_bytes(encode(StreamFrameIn(data=frames[i % len(frames)].tobytes(), format="rgb", width=w, height=h)))
                    i += 1
                    await anyio.sleep(0.08)
                await ws.send_bytes(encode(StreamEnd()))

            async def drain() -> None:
                async for _ in ws:
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                tg.start_soon(drain)
                card = page.locator("article.stream")
                await card.wait_for()
                assert await wait_images_loaded(page, "article.stream img.stream-preview") == 1
                await page.wait_for_function("() => parseFloat(document.querySelector('.stream-fps').textContent) > 1")
                await page.wait_for_function("() => parseInt(document.querySelector('article.stream').dataset.frames, 10) >= 10")
                text = await card.inner_text()
                assert "every-frame" in text and "dropped" in text and "fps" in text, text
                chain = await page.locator("article.stream dt:text-is('chain') + dd").inner_text()
                assert chain and chain != "(nothing to fix)", chain  # a dark stream gets a chain
                assert await page.locator("#streams-empty").is_hidden()
                assert (await screenshot(page, tmp_path, "console_streams.png")).stat().st_size > 5_000
                stop.set()
        await page.locator("article.stream").wait_for(state="detached")
        await page.locator("#streams-empty").wait_for(state="visible")
        assert log.only() == []
