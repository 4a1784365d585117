"""The web app, driven in a real browser: Debian's chromium, headless, through Selenium.

The app runs as ``python app.py`` on a free local port with only the built-in random
tiny weights; the tests press the page's own buttons and check the files it serves.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pdfgc.errors import PdfgcError, error_line
from pdfgc.media import FrameSource, probe_video

from conftest import ROOT, expected_frames

BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
START_SECONDS, RENDER_SECONDS = 180, 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app's address and its run folder; the app has no trained weights to offer."""
    root = tmp_path_factory.mktemp("app")
    run = root / "run"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "uploads"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), f"port={free_port()}", f"paths.root_dir={root}",
         f"hydra.run.dir={run}", "weights_dirs=[]"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=START_SECONDS)
            seen.append(line)
            if line.startswith("pdfgc app: http"):
                yield line.split(": ", 1)[1].strip(), run
                break
            assert process.poll() is None, "the app exited:\n" + "".join(seen)
    except queue.Empty:
        pytest.fail("the app printed no address:\n" + "".join(seen))
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture()
def browser() -> Iterator[webdriver.Chrome]:
    assert BROWSER and DRIVER, "chromium and chromium-driver are needed (make browser)"
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_with_sample(browser: webdriver.Chrome, url: str) -> None:
    """Load the page and the built-in sample (portrait, speech, pose and eye driver)."""
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_elements(By.ID, "sample"))[0].click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#portrait img")
               and b.find_elements(By.CSS_SELECTOR, "#pose-driver video"))


def test_render_the_sample_in_the_page(app, browser, tmp_path):
    """Load the sample, press Render, wait for the result and check the file served: one
    frame per 40 ms of speech, and the speech as its sound track."""
    url, run = app
    open_with_sample(browser, url)
    assert "Random, untrained tiny weights" in browser.find_element(By.ID, "notice").text
    browser.find_element(By.ID, "render").click()
    video = WebDriverWait(browser, RENDER_SECONDS).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#result video[src]"))[0]
    served = tmp_path / "served.mp4"
    with urllib.request.urlopen(video.get_attribute("src")) as response:
        served.write_bytes(response.read())
    info = probe_video(served)
    speech = next(run.glob("sample/speech.wav"))
    assert info["frames"] == expected_frames(speech)
    assert info["has_audio"] and abs(info["audio_seconds"] - info["frames"] / 25) < 0.1
    rendered = sorted((run / "renders").iterdir())
    assert [p.name for p in sorted(rendered[-1].iterdir())] == [
        "config.yaml", "panel.mp4", "result.mp4"]
    assert probe_video(rendered[-1] / "panel.mp4")["width"] > info["width"]


def test_a_broken_driver_shows_the_line_infer_prints(app, browser):
    """A corrupt clip as the emotion driver: the page shows infer.py's one-line error for
    that file, and the failed render leaves no folder behind."""
    url, run = app
    open_with_sample(browser, url)
    before = set((run / "renders").glob("*")) if (run / "renders").exists() else set()
    broken = run.parent / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    browser.find_element(By.CSS_SELECTOR, "#emotion-driver input[type=file]").send_keys(
        str(broken))
    uploaded = WebDriverWait(browser, 60).until(
        lambda b: list((run.parent / "uploads").rglob("broken.mp4")))[0]
    with pytest.raises(PdfgcError) as raised:
        FrameSource(uploaded)
    browser.find_element(By.ID, "render").click()
    expected = error_line(raised.value)
    WebDriverWait(browser, RENDER_SECONDS).until(
        lambda b: expected in b.find_element(By.TAG_NAME, "body").text)
    after = set((run / "renders").glob("*")) if (run / "renders").exists() else set()
    assert after == before
