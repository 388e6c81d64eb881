"""End to end in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): a rater
opens their link, answers every question (leaving and coming back half-way), and `lego study results`
reports exactly those answers. Skipped with a message where no browser is installed; CI installs one
(scripts/system_deps.sh)."""

from __future__ import annotations

import json
import shutil

import pytest

from lego_inversion.study.cli import main as lego_main
from lego_inversion.study.create import CreateConfig, create_study
from lego_inversion.study.model import load_study

from .server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium + chromedriver on PATH: apt-get install chromium chromium-driver "
                    "(scripts/system_deps.sh does this in CI)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no driver download
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_rater_completes_study_in_browser(browser, study_inputs, tmp_path, capsys):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "e2e"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=1, raters=1, attention_checks=1, seed=5))
    study = load_study(out)
    server = Server(out, str(out / "answers.sqlite"), tmp_path / "server.log")
    server.start()
    link = f"{server.url}/r/{study.rater_tokens['r001']}"
    total = len(study.order["r001"])
    # While a page is being replaced, Chrome may answer any query with a generic WebDriverException (not only
    # StaleElementReference: "Node with given id does not belong to the document"), so every wait polls the
    # page's *content* and treats such an error as "not yet".
    wait = WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,))
    clicked = {}
    try:
        browser.get(link)
        for n in range(total):
            wait.until(lambda d, n=n: f"Question {n + 1} of {total}" in d.page_source)
            wait.until(lambda d: d.execute_script(
                "const imgs = [...document.querySelectorAll('.refs img')];"
                "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);"))
            assert browser.find_element(By.ID, "question").text == study.question
            item = browser.find_element(By.NAME, "item").get_attribute("value")
            side = "left" if n % 3 else "right"
            clicked[item] = side
            browser.find_element(By.ID, f"choose-{side}").click()
            after = f"Question {n + 2} of {total}" if n + 1 < total else 'id="done"'
            wait.until(lambda d, after=after: after in d.page_source)  # the answer is stored
            if n == total // 2:  # leave and come back later through the same link
                browser.get(server.url + "/")
                browser.get(link)
    finally:
        server.stop()
    assert len(clicked) == total
    assert lego_main(["study", "results", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers"] == total and report["raters"] == 1
    expected_a = sum(study.choice_to_slot("r001", i, s) == "a" for i, s in clicked.items() if i.startswith("p"))
    overall = report["comparisons"][0]["overall"]
    assert overall["votes_a"] == expected_a and overall["votes_a"] + overall["votes_b"] == len(study.pairs)
    checks_failed = sum(study.choice_to_slot("r001", i, s) != study.items[i].answer
                        for i, s in clicked.items() if i.startswith("c"))
    assert report["attention"]["raters"][0]["failed"] == checks_failed
