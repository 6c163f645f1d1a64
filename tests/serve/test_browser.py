"""End to end in a real headless Chromium (Playwright for Python driving the system's `chromium`), against a real
uvicorn server on 127.0.0.1: typing a query, the thumbnails, the keyboard, a result's details and describe,
uploading and dropping an image, a phone-width window, the messages, and ingest with its progress bar.

Skipped, saying why, when Playwright or Chromium is missing (`pip install '.[dev]'`; `apt-get install chromium`).
`CLIPSTORE_SCREENSHOT=docs/serve.png pytest tests/serve/test_browser.py -k screenshot` writes the README's picture.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

import clipstore
from image_factory import pattern_image, write_image, write_text_as_image

pytestmark = pytest.mark.slow  # a browser and a server per test: seconds each

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install '.[dev]'")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """`open_page(url, width=1280, height=800)` -> a page at `url`; at the end of the test, the page must have met
    no script error and no Content-Security-Policy violation."""
    contexts, problems = [], []

    def open_(url: str, width: int = 1280, height: int = 800):
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" and "Failed to load resource" not in message.text else None)
        page.goto(url)
        page.wait_for_function("() => window.htmx !== undefined")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def _search(page, text: str, shown: str | None = None) -> list[str]:
    """Type `text` into the search box (debounced search) and wait for its results (whose summary names `shown`,
    by default the text): their ids, in page order."""
    page.fill("#q", text)
    page.wait_for_function("t => document.querySelector('#results .summary')?.textContent.includes(t)", arg=f"“{shown or text}”")
    return page.eval_on_selector_all("#grid .hit", "tiles => tiles.map(t => t.dataset.id)")


def _focused_rank(page) -> str | None:
    return page.evaluate("document.activeElement?.dataset?.rank ?? null")


def test_typing_a_query_shows_thumbnails_with_scores_best_first(open_page, live_server, world):
    page = open_page(live_server(world))
    page.evaluate("window.loadedOnce = true")
    ids = _search(page, "a red circle")
    assert ids == [hit.id for hit in world.search_text("a red circle", k=20)]
    scores = [float(s) for s in page.locator("#grid .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and len(scores) == 20
    page.wait_for_function("() => Array.from(document.querySelectorAll('#grid img')).slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")
    page.fill("#k", "5")
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 5")
    assert page.evaluate("window.loadedOnce") is True  # results came in place: the page never reloaded


def test_the_keyboard_searches_and_moves_through_results(open_page, live_server, world):
    page = open_page(live_server(world))
    page.evaluate("document.querySelector('#q').value = 'a blue square'")  # no input event: only Enter can search
    page.focus("#q")
    page.keyboard.press("Enter")
    page.wait_for_selector("#grid .hit")
    assert page.eval_on_selector_all("#grid .hit", "t => t.map(e => e.dataset.id)") == [h.id for h in world.search_text("a blue square", k=20)]
    page.keyboard.press("ArrowDown")
    assert _focused_rank(page) == "1"
    page.keyboard.press("ArrowRight")
    assert _focused_rank(page) == "2"
    columns = page.evaluate("(() => { const t = [...document.querySelectorAll('#grid .hit')]; return t.filter(e => e.getBoundingClientRect().top === t[0].getBoundingClientRect().top).length })()")
    assert columns >= 3
    page.keyboard.press("ArrowDown")
    assert _focused_rank(page) == str(2 + columns)
    page.keyboard.press("ArrowLeft")
    assert _focused_rank(page) == str(1 + columns)
    focused = page.evaluate("document.activeElement.dataset.id")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#detail-card[data-id='{focused}']")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail-card", state="detached")
    assert page.evaluate("document.activeElement.dataset.id") == focused
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"


def test_a_result_opens_large_with_its_facts_and_describe(open_page, live_server, world):
    page = open_page(live_server(world))
    ids = _search(page, "a yellow star")
    record = world.image(ids[0])
    page.click("#grid .hit >> nth=0")
    card = page.wait_for_selector("#detail-card")
    page.wait_for_function("() => document.querySelector('#detail-card img.large')?.naturalWidth > 0")
    text = card.inner_text()
    assert record.paths[0] in text and "PNG" in text and record.prompt in text and f"{record.width} × {record.height} px" in text
    page.wait_for_selector("#describe .prompts li")
    prompts = page.locator("#describe .prompts .text").all_inner_texts()
    expected = world.describe(record.paths[0])
    assert prompts == [hit.text for hit in expected.prompts]
    assert "No trained Model A in this store" in page.inner_text("#describe") and "Model B alone" in page.inner_text("#describe")
    assert page.url.endswith("/")  # a click opens the pane, not the file


def test_uploading_an_image_finds_it_and_combines_with_text(open_page, live_server, world):
    page = open_page(live_server(world))
    target = world.search_text("a green triangle", k=1)[0]
    page.set_input_files("#image-input", target.path)
    page.wait_for_selector("#query-image .chip img")
    page.wait_for_function("() => document.querySelector('#results .summary')?.textContent.includes('like the query image')")
    assert page.get_attribute("#grid .hit >> nth=0", "data-id") == target.id
    assert page.inner_text("#grid .score >> nth=0") == "1.000"
    data = Path(target.path).read_bytes()
    combined = _search(page, "a circle −red", shown="a circle")
    assert combined == [hit.id for hit in world.search("a circle", image=data, negative="red", k=20)]
    assert "and like the query image, without “red”" in page.inner_text("#results .summary")
    page.click("#query-image .clear")
    page.wait_for_selector("#query-image .chip", state="detached")
    page.wait_for_function("() => !document.querySelector('#results .summary').textContent.includes('like the query image')")
    assert page.eval_on_selector_all("#grid .hit", "t => t.map(e => e.dataset.id)") == [h.id for h in world.search("a circle", negative="red", k=20)]


def test_dropping_an_image_and_the_similar_button(open_page, live_server, world):
    page = open_page(live_server(world))
    target = world.search_text("a purple hexagon", k=1)[0]
    page.evaluate(
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)); const dt = new DataTransfer();
                   dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                   document.querySelector('.drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
        base64.b64encode(Path(target.path).read_bytes()).decode(),
    )
    page.wait_for_selector("#query-image .chip >> text=dropped.png")
    page.wait_for_function(f"() => document.querySelector('#grid .hit')?.dataset.id === '{target.id}'")
    third = page.get_attribute("#grid .hit >> nth=2", "data-id")
    page.click("#grid .similar >> nth=2")
    page.wait_for_function(f"() => document.querySelector('#query-image input[name=like]')?.value === '{third}'")
    page.wait_for_function(f"() => document.querySelector('#grid .hit')?.dataset.id === '{third}'")
    assert page.inner_text("#grid .score >> nth=0") == "1.000"


def test_an_upload_that_is_not_an_image_says_so(open_page, live_server, world, tmp_path):
    page = open_page(live_server(world))
    page.set_input_files("#image-input", str(write_text_as_image(tmp_path / "holiday.jpg")))
    message = page.wait_for_selector("#query-image .message.error")
    assert message.inner_text() == "Not an image we can read: not an image (looks like text)"


def test_a_phone_width_window_is_usable(open_page, live_server, world):
    page = open_page(live_server(world), width=390, height=844)
    ids = _search(page, "a red square")
    assert len(ids) == 20
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    box = page.locator("#q").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    tops = page.eval_on_selector_all("#grid .hit", "t => t.slice(0, 3).map(e => Math.round(e.getBoundingClientRect().top))")
    assert tops[0] == tops[1] == tops[2]  # three thumbnails a row
    page.click("#grid .hit >> nth=1")
    page.wait_for_selector("#detail-card")
    pane = page.locator("#detail").bounding_box()
    assert pane["width"] >= 380 and pane["x"] <= 5  # the details cover the screen
    page.click("#detail .close")
    page.wait_for_selector("#detail-card", state="detached")


def test_messages_for_an_empty_store_and_a_store_without_prompts(open_page, live_server, empty, plain):
    page = open_page(live_server(empty))
    page.fill("#q", "a dog")
    page.wait_for_selector("#results-message >> text=This store holds no images yet")
    page = open_page(live_server(plain))
    _search(page, "a pattern")
    page.click("#grid .hit >> nth=0")
    message = page.wait_for_selector("#describe .message.error")
    assert "The prompt bank is empty and no Model A is trained" in message.inner_text()


def test_ingest_from_the_page_with_a_live_progress_bar(open_page, live_server, plain, tmp_path):
    from clipstore.db.locking import write_lock

    root = tmp_path / "incoming"
    for seed in range(4):
        write_image(root / "new" / f"n{seed}.png", pattern_image(200 + seed))
    page = open_page(live_server(plain, allow_ingest=True, roots=(str(root),)))
    page.click("#info-box summary")
    page.wait_for_selector("#info-images >> text=6")
    page.fill("#folder", str(root / "new"))
    with write_lock(plain.location):  # another writer: the ingest waits, its bar shows it
        page.click("#ingest button")
        page.wait_for_selector("#ingest-status progress")
        page.wait_for_selector("#ingest-status >> text=waiting for another writer")
    page.wait_for_selector("#ingest-status >> text=added 4", timeout=120_000)
    assert page.get_attribute("#ingest-status progress", "value") == "1"
    page.wait_for_selector("#info-images >> text=10")  # the info pane refreshed by itself
    assert clipstore.connect(plain.path).count_images() == 10


def test_screenshot(open_page, live_server, tmp_path):
    """The README's picture: a store of 160 rendered images, a text search, a result opened and described."""
    from clipstore.world import render_folder

    render_folder(tmp_path / "photos", 160, seed=4)
    store = clipstore.connect(tmp_path / "photos.clipstore", model="clipstore-mini")
    store.ingest(tmp_path / "photos")
    page = open_page(live_server(store), width=1280, height=820)
    _search(page, "three yellow stars")
    page.click("#grid .hit >> nth=0")
    page.wait_for_selector("#describe .prompts li")
    page.wait_for_function("() => Array.from(document.querySelectorAll('#grid img')).slice(0, 12).every(i => i.complete && i.naturalWidth > 0)")
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    if os.environ.get("CLIPSTORE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CLIPSTORE_SCREENSHOT"])
