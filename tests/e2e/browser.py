"""A real browser for the e2e tier: Debian's headless Chromium driven by selenium.

What a trainee sees after logging in (issue 14, "the first screen"): the hub's login form, then
JupyterLab. JupyterLab 4's announcements plugin (``@jupyterlab/apputils-extension:announcements``)
asks :data:`NEWS_QUESTION` in a toast notification (react-toastify, ``.Toastify__toast``) once
the app is restored, for as long as its ``fetchNews`` setting is unanswered.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from e2e_harness import require

NEWS_QUESTION = "Would you like to get notified about official Jupyter news?"
# The lab shell, and the launcher it opens in an empty main area.
LAB_SHELL = ".jp-LabShell"
LAUNCHER = ".jp-Launcher"
TOAST = ".Toastify__toast"


def chromium(profile: Path) -> Any:
    """A headless Chromium (Debian's chromium + chromium-driver) with a fresh profile."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    require(binary is not None, "chromium not installed (apt-get install chromium)")
    require(driver is not None, "chromedriver not installed (apt-get install chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium not installed (pip install selenium)")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--ignore-certificate-errors", "--no-proxy-server", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    # An explicit driver: selenium's own manager would try to download one.
    return webdriver.Chrome(options=options, service=Service(executable_path=str(driver)))


def hub_login(driver: Any, base_url: str, user: str, password: str) -> None:
    """Log in through the hub's login form, as a trainee does."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/hub/login")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(password)
    driver.find_element(By.ID, "login_submit").click()


def wait_for_lab(driver: Any, timeout: float) -> None:
    """Wait until JupyterLab's shell and its launcher are on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.5)
    for css in (LAB_SHELL, LAUNCHER):
        wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)),
            f"no {css} on {driver.current_url} within {timeout:.0f} s",
        )


def launcher_notebooks(driver: Any) -> list[str]:
    """The launcher's notebook kernels, by display name (one card each)."""
    from selenium.webdriver.common.by import By

    cards = driver.find_elements(
        By.CSS_SELECTOR, f'{LAUNCHER} .jp-LauncherCard[data-category="Notebook"]'
    )
    return [str(card.get_attribute("title")) for card in cards]


def news_question(driver: Any) -> str:
    """The news question's toast text if it is on the page (its DOM, visible or not), else ''."""
    from selenium.webdriver.common.by import By

    for toast in driver.find_elements(By.CSS_SELECTOR, TOAST):
        text = str(toast.get_attribute("textContent") or "")
        if NEWS_QUESTION in text:
            return text
    return NEWS_QUESTION if NEWS_QUESTION in driver.page_source else ""


def settle(driver: Any, seconds: float) -> str:
    """Watch the page for ``seconds`` (notifications come after the lab is restored); return the
    news question as soon as it shows, else '' at the end."""
    deadline = time.monotonic() + seconds
    while True:
        found = news_question(driver)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    """Save a PNG of the page into ``folder`` and, if set, ``$BAKERY_E2E_ARTIFACTS``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    artifacts = os.environ.get("BAKERY_E2E_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path
