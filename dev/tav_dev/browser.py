"""The real ComfyUI frontend in Debian's headless Chromium, driven by Playwright (no browser download)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@contextmanager
def comfy_page(url: str, timeout_ms: int = 90_000) -> Iterator:
    """A page with ComfyUI's app loaded (window.app and its graph ready)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
            page.wait_for_function("window.app && window.app.graph", timeout=timeout_ms)
            yield page
        finally:
            browser.close()
