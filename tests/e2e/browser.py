"""A real browser for the e2e tier: Debian's headless Chromium driven by selenium.

What a trainee sees after logging in (issue 14, "the first screen"): the hub's login form, then
JupyterLab. JupyterLab 4's announcements plugin (``@jupyterlab/apputils-extension:announcements``)
asks :data:`NEWS_QUESTION` in a toast notification (react-toastify, ``.Toastify__toast``) once
the app is restored, for as long as its ``fetchNews`` setting is unanswered.

With an OpenID Connect hub (oidc_server.py), :func:`oidc_login` goes from the hub's "Sign in
with ..." button through the provider's login page and back to the hub; the browser then needs
``chromium(profile, [oidc_server.RESOLVER_RULES])`` to find the provider's host.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e_harness import require

NEWS_QUESTION = "Would you like to get notified about official Jupyter news?"
# The lab shell, and the launcher it opens in an empty main area.
LAB_SHELL = ".jp-LabShell"
LAUNCHER = ".jp-Launcher"
TOAST = ".Toastify__toast"
# JupyterHub's oauth login page: <a role="button" class="btn btn-jupyter btn-lg"
# href="/hub/oauth_login?next=">Sign in with ...</a>.
OAUTH_BUTTON = "a.btn-jupyter[href*='oauth_login'], a[href*='/hub/oauth_login']"
# The provider's pages (oidc/provider.mjs; oidc-provider's devInteractions use the same names).
OIDC_LOGIN_FORM = "form:has(input[name='login']):has(input[name='password'])"
OIDC_CONSENT = "form:has(input[name='prompt'][value='consent'])"
SUBMIT = "button[type='submit'], input[type='submit']"
# An error page of the provider (not a refused login: that is the login form again).
OIDC_ERROR = ".oidc-error"


def chromium(profile: Path, extra_args: Sequence[str] = ()) -> Any:
    """A headless Chromium (Debian's chromium + chromium-driver) with a fresh profile;
    ``extra_args`` are more switches (e.g. ``--host-resolver-rules=MAP NAME 127.0.0.1``)."""
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
        "--window-size=1400,900", f"--user-data-dir={profile}", *extra_args,
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


def page_text(driver: Any) -> str:
    """The visible text of the page (its source if it has no body)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return str(driver.page_source)


def oidc_login(driver: Any, hub_url: str, login: str, password: str, timeout: float) -> str:
    """Log in to an OpenID Connect hub as a trainee does: the hub's "Sign in with ..." button
    (JupyterHub's oauth login page), the provider's login form, its consent page if any, and back.
    Returns the hub URL the browser ends on (the spawn page, or the hub's error page: the caller
    judges); raises with the page's text if the provider refuses or nothing happens in time."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    hub_url = hub_url.rstrip("/")
    driver.get(f"{hub_url}/hub/login")
    if not str(driver.current_url).startswith(hub_url):  # the hub's auto_login: no button
        return oidc_sign_in(driver, hub_url, login, password, timeout)
    wait = WebDriverWait(driver, timeout, poll_frequency=0.3)
    try:
        button = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, OAUTH_BUTTON)),
            f"no sign-in button ({OAUTH_BUTTON}) on {driver.current_url}",
        )
    except Exception as e:
        raise RuntimeError(f"{e}: {page_text(driver)[:2000]}") from None
    button.click()
    # The new document is the provider's (or, with a session there already, the hub's again).
    wait.until(ec.staleness_of(button), f"the sign-in button led nowhere in {timeout:.0f} s")
    return oidc_sign_in(driver, hub_url, login, password, timeout)


def oidc_sign_in(driver: Any, back_to: str, login: str, password: str, timeout: float) -> str:
    """On the provider's side of an authorization: sign in with ``login``/``password``, continue
    past a consent page, and return the URL once the browser is back under ``back_to`` (the
    client's). Raises RuntimeError with the page's text if the provider refuses the login or shows
    an error, TimeoutError if the browser is not back in time."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    deadline = time.monotonic() + timeout
    submitted = False
    while True:
        url = str(driver.current_url)
        if url.startswith(back_to):
            return url
        forms = driver.find_elements(By.CSS_SELECTOR, OIDC_LOGIN_FORM)
        consent = driver.find_elements(By.CSS_SELECTOR, OIDC_CONSENT)
        if (forms and submitted) or driver.find_elements(By.CSS_SELECTOR, OIDC_ERROR):
            raise RuntimeError(f"the provider refused {login!r} at {url}: {page_text(driver)}")
        if forms or consent:
            form = (forms or consent)[0]
            if forms:
                for name, value in (("login", login), ("password", password)):
                    field = form.find_element(By.NAME, name)
                    field.clear()
                    field.send_keys(value)
                submitted = True
            form.find_element(By.CSS_SELECTOR, SUBMIT).click()
            left = max(1.0, deadline - time.monotonic())
            WebDriverWait(driver, left, poll_frequency=0.2).until(
                ec.staleness_of(form), f"the provider's form at {url} did not submit"
            )
            continue
        if time.monotonic() > deadline:
            text = page_text(driver)[:2000]
            raise TimeoutError(f"not back at {back_to} within {timeout:.0f} s: on {url}: {text}")
        time.sleep(0.3)


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
