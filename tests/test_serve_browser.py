"""`vidgen serve` as its users meet it: a real headless Chromium drives the page, gradio_client
calls the /generate endpoint, and SIGTERM stops the server cleanly.

Chromium is needed, not optional: CI installs it (.ci/run). Where it is missing these tests fail
and say what to install.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import av
import pytest
from serve_helpers import Server, fast_model

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
WAIT = 60  # seconds for a clip on a busy 2-core machine


@pytest.fixture(scope="module")
def server(sd_image_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-browser")
    model = fast_model(sd_image_model, folder / "fast")
    running = Server(model, folder / "clips", folder / "server.log")
    yield running
    # Stopped as `kill` stops it: 143, after closing the server; the clips stay.
    assert running.stop() == 143, running.output()
    assert "vidgen serve: terminated" in running.output() and "Traceback" not in running.output()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver = shutil.which(CHROMEDRIVER)
    if binary is None or driver is None:
        pytest.fail("the browser tests need Chromium and its driver: apt-get install chromium chromium-driver "
                    f"(found chromium: {binary}, chromedriver: {driver})")
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


def _field(browser, elem_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")


def _type(browser, elem_id: str, text: str) -> None:
    field = _field(browser, elem_id)
    field.clear()
    field.send_keys(text)


VIDEO = "document.querySelector('#clip video')"


def test_page_makes_a_clip_that_plays_and_downloads_and_shows_refusals(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    browser.get(server.url)
    wait.until(lambda b: _field(b, "prompt"))
    _type(browser, "prompt", "a red circle moving left")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()

    # The clip plays in the page: the browser decoded its length and frame size.
    wait.until(lambda b: b.execute_script(f"const v = {VIDEO}; return v !== null && v.readyState >= 1"))
    duration, width, height, src = browser.execute_script(
        f"const v = {VIDEO}; return [v.duration, v.videoWidth, v.videoHeight, v.currentSrc]")
    assert duration == pytest.approx(2 / 8, abs=0.05) and (width, height) == (32, 32), (duration, width, height)
    assert src.endswith("clip-0001.mp4")
    status = browser.find_element(By.CSS_SELECTOR, "#status").text
    assert status.startswith("Made clip #1"), status
    seed_used = _field(browser, "seed").get_attribute("value")  # the random seed drawn, shown
    assert seed_used.isdigit() and f"seed {seed_used}" in status

    # The download link gives the MP4 itself: H.264, the 2 frames the sidecar names.
    link = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#download a[href]")).get_attribute("href")
    download = tmp_path / "download.mp4"
    download.write_bytes(urllib.request.urlopen(link, timeout=30).read())
    with av.open(str(download)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and sum(1 for _ in container.decode(stream)) == 2
    assert f"seed {seed_used} | 2 steps" in browser.find_element(By.CSS_SELECTOR, "#settings").text

    # A refusal is a message in the page, in the command line's words; nothing else changes.
    _type(browser, "steps", "0")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda b: "Not made" in b.find_element(By.CSS_SELECTOR, "#status").text)
    assert "steps 0: must be at least 1, got 0" in browser.find_element(By.CSS_SELECTOR, "#status").text
    assert browser.execute_script(f"return {VIDEO}.currentSrc") == src

    # The page still works after it: a second clip with a chosen seed, both in the gallery and table.
    _type(browser, "steps", "2")
    browser.find_element(By.CSS_SELECTOR, "#random-seed input").click()
    _type(browser, "seed", "42")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda b: b.execute_script(f"return {VIDEO}.currentSrc.endsWith('clip-0002.mp4')"))
    wait.until(lambda b: b.execute_script(f"return {VIDEO}.readyState >= 1 && {VIDEO}.videoWidth === 32"))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery video")) == 2)
    table = browser.find_element(By.CSS_SELECTOR, "#table").text
    assert "42" in table and seed_used in table and "clip-0002.mp4" in table
    screenshot = Path(server.log_path).with_name("page.png")
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0


def test_generate_endpoint_returns_the_clip_to_gradio_client(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    path = client.predict(prompt="a blue square moving right", seed=3, api_name="/generate")
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (32, 32)
        comment = container.metadata["comment"]
    assert '"seed": 3' in comment and '"prompt": "a blue square moving right"' in comment
    # Same seed and settings, same clip; a refusal is the command line's message, and the server serves on.
    assert Path(client.predict(prompt="a blue square moving right", seed=3, api_name="/generate")).read_bytes() == \
        Path(path).read_bytes()
    with pytest.raises(AppError, match="must be at most 18446744073709551615"):
        client.predict(prompt="a blue square", seed=2**64, api_name="/generate")
    with pytest.raises(AppError, match="the prompt is empty"):
        client.predict(prompt=" ", seed=1, api_name="/generate")
    assert Path(client.predict(prompt="a blue square", seed=1, steps=1, frames=3, api_name="/generate")).exists()


def test_a_second_page_waits_in_the_queue_and_cancel_stops_both(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def open_page(steps: str, frames: str = "2") -> str:
        browser.switch_to.new_window("tab")  # a new page load: a session of its own
        browser.get(server.url)
        WebDriverWait(browser, WAIT).until(lambda b: _field(b, "prompt"))
        _type(browser, "prompt", "a green square moving up")
        _type(browser, "steps", steps)
        _type(browser, "frames", frames)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        return browser.current_window_handle

    def clip_text(tab: str) -> str:
        browser.switch_to.window(tab)
        return browser.find_element(By.CSS_SELECTOR, "#clip").text

    def status(tab: str) -> str:
        browser.switch_to.window(tab)
        return browser.find_element(By.CSS_SELECTOR, "#status").text

    wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
    clips_before = sorted(p.name for p in server.clips.glob("*.mp4"))
    running = open_page("999", "8")  # the most steps and frames this model takes: long enough to be cancelled
    wait.until(lambda b: "base stage: step" in clip_text(running))  # its progress bar, by stage and step
    waiting = open_page("2")
    wait.until(lambda b: "queue: 1/1" in clip_text(waiting))  # its place in the queue
    browser.find_element(By.CSS_SELECTOR, "#cancel").click()  # the waiting one ...
    browser.switch_to.window(running)
    browser.find_element(By.CSS_SELECTOR, "#cancel").click()  # ... and the running one
    for tab in (running, waiting):
        wait.until(lambda b: "cancelled: no clip was written" in status(tab))
    assert sorted(p.name for p in server.clips.glob("*.mp4")) == clips_before
