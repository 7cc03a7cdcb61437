"""The README's screenshot of the web console: a real daemon, a real job, headless Chromium.

Usage: python scripts/console_screenshot.py [--out docs/console.png] [--image examples/degraded/chelsea.png]
                                            [--chromium /usr/bin/chromium]

Starts a daemon on a free loopback port with a temporary data folder, restores ``--image``
through the console's own upload form (the search on the shipped cat rolls back and re-plans,
so the tree shows more than one node), waits until the page shows the finished job with every
image loaded, moves the before/after slider and writes a full-page PNG to ``--out``. Also prints
the page's first contentful paint on loopback. Needs Playwright for Python (the ``test`` extra)
and a Chromium binary (Debian's ``chromium``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]


async def shoot(out: Path, image: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright

    from agentir.daemon.app import run_daemon
    from agentir.daemon.config import DaemonConfig

    all_loaded = "() => [...document.querySelectorAll('#tree img.thumb, #img-before, #img-after')].every(i => i.complete && i.naturalWidth > 0)"
    with tempfile.TemporaryDirectory() as data:
        config = DaemonConfig(port=0, data=Path(data), min_free_bytes=0)
        async with run_daemon(config) as daemon, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
                page.set_default_timeout(120_000)
                await page.goto(f"{daemon.url}/")
                await page.locator("#new-job").wait_for()
                await page.set_input_files("#file", str(image))
                await page.click("#submit")
                await page.locator("#main[data-loaded='done']").wait_for()
                await page.wait_for_function(all_loaded)
                await page.fill("#cmp-slider", "45")
                await page.evaluate("document.querySelectorAll('.notice').forEach(n => n.remove()); window.scrollTo(0, 0)")
                out.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(out), full_page=True)
                await page.goto(f"{daemon.url}/?again=1#/jobs")  # a fresh document: its own paint timing
                await page.locator("#jobs").wait_for()
                paint = await page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
                print(f"wrote {out} ({out.stat().st_size} bytes); first contentful paint on loopback: {paint:.0f} ms")
            finally:
                await browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "degraded" / "chelsea.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        print(f"error: no Chromium at {args.chromium}; install Debian's chromium or pass --chromium PATH", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"error: no image at {args.image}", file=sys.stderr)
        return 2
    anyio.run(shoot, args.out, args.image, args.chromium, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
