"""The demo in a real browser: `fourdistill app` in a subprocess, driven by headless Chromium.

Load the page, move the time and azimuth sliders, press Generate, read the image the page shows
and check that it changed and equals what the library returns for the same settings.

Needs the `app` extra (gradio, selenium) and the system's Chromium and its driver
(`apt-get install chromium chromium-driver`; nothing is downloaded). Under CI (the CI variable
set) anything missing fails the test; elsewhere the test is skipped with what to install.
FOURDISTILL_APP_SCREENSHOT=PATH also saves a screenshot of the page at the end (docs/img/app.png:
FOURDISTILL_APP_TEST_STEPS=20 FOURDISTILL_APP_SCREENSHOT=docs/img/app.png pytest tests/test_app_browser.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# denoising steps (the page starts with 20; two keep the test short on a CPU); the README's
# screenshot is taken with FOURDISTILL_APP_TEST_STEPS=20
STEPS = int(os.environ.get("FOURDISTILL_APP_TEST_STEPS", "2"))
SEED = 1_000_003  # a held-out world scene


def _missing() -> list[str]:
    missing = [f"the Python package {name} (pip install -e \".[app]\")" for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            missing.append(f"{path} (apt-get install {package})")
    return missing


@pytest.fixture(scope="module")
def requirements():
    missing = _missing()
    if missing:
        message = "the browser test needs " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI must install them (see .ci/run).", pytrace=False)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(requirements, tmp_path_factory):
    """The app on a free localhost port; yields its URL and stops it afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fourdistill.cli", "app", "--port", str(port), "--steps", str(STEPS)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(url: str, proc, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fourdistill app exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        time.sleep(0.5)
    pytest.fail(f"fourdistill app did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def browser(requirements):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000",
                "--no-proxy-server", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _image_src(driver, elem_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return found[0].get_attribute("src") if found else None


def _fetch_image(driver, src: str) -> np.ndarray:
    """The image behind an <img> src (a data URL or a file URL of the app) as uint8 (H, W, 3)."""
    if src.startswith("data:"):
        import base64

        data = base64.b64decode(src.split(",", 1)[1])
    else:
        with urllib.request.urlopen(src, timeout=30) as r:
            data = r.read()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _wait_image_change(driver, elem_id: str, before: str | None, timeout: float = 120.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def changed(d):
        src = _image_src(d, elem_id)
        status = d.find_element(By.ID, "status").text
        if status.startswith("Error"):
            pytest.fail(f"the page shows an error: {status}", pytrace=False)
        return src if src and src != before and status.startswith("generated") else False

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(changed)


def _set_slider(driver, elem_id: str, presses: int) -> float:
    """Move the range slider `elem_id` by `presses` keyboard steps (negative: left); its value."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, elem_id)
    slider = box.find_element(By.CSS_SELECTOR, "input[type=range]")
    key = Keys.ARROW_RIGHT if presses > 0 else Keys.ARROW_LEFT
    slider.send_keys(*([key] * abs(presses)))
    time.sleep(0.3)
    return float(box.find_element(By.CSS_SELECTOR, "input[type=number]").get_attribute("value"))


def _library(settings: list[tuple[float, float]]):
    """What the library gives for the page's settings, (d, azimuth) each: `fourdistill generate
    --world SEED --time d --azimuth a --elevation 0 --steps STEPS` (guidance 5, noise seed 0)
    as uint8, and the true targets."""
    import torch

    from fourdistill.generate import ControlledPipeline, ViewChange, world_reference
    from fourdistill.io import to_uint8

    torch.set_num_threads(1)
    cp = ControlledPipeline.from_pretrained()
    ref = world_reference(SEED, size=cp.size[0], time=0.5)
    out = []
    for d, azimuth in settings:
        view = ViewChange(azimuth_deg=azimuth, elevation_deg=0.0)
        images = cp(ref.caption, ref.image, time=d, view=view, num_inference_steps=STEPS, guidance_scale=5.0, seed=0)
        out.append((to_uint8(images[0]), to_uint8(ref.truth(d, view, cp.size[0]))))
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (float sums in another process may round the other way)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_generate_in_the_browser_shows_what_the_library_returns(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc, log = server
    (lib_before, truth_before), (lib_after, truth_after) = _library([(0.0, 0.0), (0.5, 90.0)])  # while the server starts
    assert not _close(lib_before, lib_after)  # the sliders' change shows in the library's images
    _wait_for(url, proc, log)
    driver = browser
    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(ec.element_to_be_clickable((By.ID, "generate")))
    seed = driver.find_element(By.CSS_SELECTOR, "#seed input")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys(str(SEED), Keys.TAB)
    wait.until(lambda d: str(SEED) in d.find_element(By.ID, "status").text)

    driver.find_element(By.ID, "generate").click()  # d = 0, no view change
    first = _wait_image_change(driver, "generated", None)
    before = _fetch_image(driver, first)
    assert _close(before, lib_before), "the page's first image is not the library's"
    np.testing.assert_array_equal(_fetch_image(driver, _image_src(driver, "truth")), truth_before)

    assert _set_slider(driver, "time", 10) == pytest.approx(0.5)  # steps of 0.05
    assert _set_slider(driver, "azimuth", 18) == pytest.approx(90.0)  # steps of 5 degrees
    driver.find_element(By.ID, "generate").click()
    second = _wait_image_change(driver, "generated", first)
    status = driver.find_element(By.ID, "status").text
    assert "d = +0.50" in status and "azimuth +90 deg" in status, status
    after = _fetch_image(driver, second)
    assert not np.array_equal(after, before), "moving the sliders did not change the image"
    diff = np.abs(after.astype(int) - lib_after.astype(int))
    assert _close(after, lib_after), f"the page's image differs from the library's: max {diff.max()}, mean {diff.mean():.3f}"
    np.testing.assert_array_equal(_fetch_image(driver, _image_src(driver, "truth")), truth_after)

    # the sweep: a 3 x 3 time x view grid and its video, with the progress shown meanwhile
    driver.find_element(By.CSS_SELECTOR, "#settings button, #settings .label-wrap").click()
    wait.until(ec.visibility_of_element_located((By.ID, "grid-n")))
    assert _set_slider(driver, "grid-n", -2) == 3
    driver.find_element(By.ID, "sweep").click()
    wait_long = WebDriverWait(driver, 120, poll_frequency=0.25)
    wait_long.until(lambda d: d.find_element(By.ID, "status").text.startswith(("grid of", "**Error", "Error")))
    assert driver.find_element(By.ID, "status").text.startswith("grid of 3 x 3"), driver.find_element(By.ID, "status").text
    grid = _fetch_image(driver, _image_src(driver, "grid"))
    side = lib_before.shape[0] + 2
    assert grid.shape == (3 * side + 2, 4 * side + 2, 3)  # the reference, then 3 columns; 3 rows
    assert _image_src(driver, "video").endswith(".gif")

    # a user error is a message in the page, not a traceback
    seed = driver.find_element(By.CSS_SELECTOR, "#seed input")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("7", Keys.TAB)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Error"))
    assert "world scene 7 is not a held-out scene" in driver.find_element(By.ID, "status").text
    assert "Traceback" not in driver.page_source
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys(str(SEED), Keys.TAB)
    wait.until(lambda d: str(SEED) in d.find_element(By.ID, "status").text)

    screenshot = os.environ.get("FOURDISTILL_APP_SCREENSHOT")
    if screenshot:
        driver.execute_script("window.scrollTo(0, 0)")
        driver.set_window_size(1280, 1180)
        time.sleep(1.0)
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(screenshot)
