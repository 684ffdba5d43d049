"""Label Studio 1.23.2's own editor (headless Debian chromium through Selenium) reads and writes Text
span offsets as code points (Python `str` indices): our span predictions show over the right
characters, and spans an annotator marks come back with the offsets `spans` trains on, through
emoji sequences, combining marks and CRLF line ends."""

from __future__ import annotations

import shutil
import time

import pytest

from backend import spans
from backend.families.crf_spans import span_region
from backend.labelconfig import parse_label_config
from lab.client import ner_config
from lab.processes import stretch
from tests.conftest import REQUIRE_SERVICES, wait_for

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

TEXTS = [
    "👩\u200d👩\u200d👧 Ann met 👍🏽 Bob in Rome",  # emoji: two UTF-16 units per code point, ZWJ sequences
    "Cafe\u0301 Zoe\u0308 and Ann",  # combining marks
    "line one\r\nAnn in Rome\r\nend",  # CRLF line ends
]
WORDS = [
    [("Ann", "PER"), ("Bob", "PER"), ("Rome", "LOC")],
    [("Zoe\u0308", "PER"), ("Ann", "PER")],
    [("Ann", "PER"), ("Rome", "LOC"), ("end", "LOC")],
]

# Selects the `occurrence`-th `word` of the editor's text the way a mouse does (a DOM range over its
# text nodes, then mouseup) and returns the editor's text as the DOM holds it.
SELECT = """
const [word, occurrence] = arguments;
const box = document.querySelector('.lsf-richtext__container');
const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
let nodes = [], text = '';
while (walker.nextNode()) { nodes.push([walker.currentNode, text.length]); text += walker.currentNode.data; }
let at = -1;
for (let k = 0; k <= occurrence; k++) at = text.indexOf(word, at + 1);
const locate = (i) => { for (const [n, s] of nodes) if (i <= s + n.data.length) return [n, i - s]; };
const [startNode, startOffset] = locate(at), [endNode, endOffset] = locate(at + word.length);
const range = document.createRange();
range.setStart(startNode, startOffset);
range.setEnd(endNode, endOffset);
const selection = window.getSelection();
selection.removeAllRanges();
selection.addRange(range);
startNode.parentElement.dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
return text;
"""
CLICK_LABEL = """
const label = Array.from(document.querySelectorAll('.lsf-label'))
  .find(e => e.querySelector('.lsf-label__text')?.textContent === arguments[0]);
if (label) label.click();
return !!label;
"""
ACTIVE = "return Array.from(document.querySelectorAll('.lsf-label_selected .lsf-label__text')).map(e => e.textContent)"
STATE = """return {labels: Array.from(document.querySelectorAll('.lsf-label')).map(e => e.className),
                  regions: document.querySelectorAll('.htx-highlight').length}"""
HIGHLIGHTED = "return Array.from(document.querySelectorAll('.lsf-richtext__container .htx-highlight')).map(e => e.textContent)"


@pytest.fixture
def browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        if REQUIRE_SERVICES:
            pytest.fail("chromium and chromedriver are required (apt-get install chromium chromium-driver)")
        pytest.skip("chromium or chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    driver_ = webdriver.Chrome(service=Service(driver), options=options)
    driver_.set_page_load_timeout(120)
    try:
        yield driver_
    finally:
        driver_.quit()


def sign_in(browser, label_studio) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{label_studio.url}/user/login/")
    browser.find_element(By.NAME, "email").send_keys(label_studio.email)
    browser.find_element(By.NAME, "password").send_keys(label_studio.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait_for(lambda: "/user/login" not in browser.current_url, timeout=60, interval=0.5)


def open_task(browser, label_studio, project: int, task: int) -> None:
    browser.get(f"{label_studio.url}/projects/{project}/data?task={task}")
    wait_for(lambda: browser.execute_script("return !!document.querySelector('.lsf-richtext__container .lsf-richtext__line')"), timeout=120)


def choose(browser, label: str, timeout: float = 60) -> None:
    """Make `label` the active one, clicking it again every few seconds while the editor (slow to
    start on a loaded machine) has not taken the click; never clicks an active label (that would
    let go of it)."""
    clicked = [0.0]

    def chosen() -> bool:
        active = browser.execute_script(ACTIVE)
        if active == [label]:
            return True
        if time.monotonic() - clicked[0] > 3 * stretch():
            browser.execute_script(CLICK_LABEL, label)
            clicked[0] = time.monotonic()
        return False

    try:
        wait_for(chosen, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(
            f"the editor did not take label {label!r}: active {browser.execute_script(ACTIVE)}, {browser.execute_script(STATE)}"
        ) from None


def mark(browser, word: str, label: str, attempts: int = 3) -> None:
    """Mark `word` with `label` as an annotator does: the label, then a selection (tried again when a
    loaded machine leaves the editor without the mark)."""
    marked = len(browser.execute_script(HIGHLIGHTED))
    for _ in range(attempts):
        choose(browser, label)
        time.sleep(0.5)  # the editor shows the label active before its store has it: a span marked at once gets the last one
        browser.execute_script(SELECT, word, 0)
        try:
            wait_for(lambda: len(browser.execute_script(HIGHLIGHTED)) > marked, timeout=10)
        except AssertionError:
            continue
        wait_for(lambda: not browser.execute_script(ACTIVE), timeout=30)  # the editor lets go of the label once it marked the span
        return
    raise AssertionError(f"the editor did not mark {word!r} in {attempts} attempts; it shows {browser.execute_script(HIGHLIGHTED)}")


def test_the_editor_shows_our_offsets_over_the_right_characters_and_stores_code_points(label_studio, browser):
    config = ner_config(["PER", "LOC"])
    control = parse_label_config(config).controls[0]
    ls = label_studio.client()
    project = ls.projects.create(title="e2e editor offsets", label_config=config)
    predicted = []
    for text, words in zip(TEXTS, WORDS):
        found = [spans.Span(text.index(w), text.index(w) + len(w), label) for w, label in words]
        regions = [{"id": f"r{n}", **span_region(control, text, s, 0.9)} for n, s in enumerate(found)]
        predicted.append({"data": {"text": text}, "predictions": [{"model_version": "ours", "score": 0.5, "result": regions}]})
    ls.projects.import_tasks(id=project.id, request=predicted + [{"data": {"text": t}} for t in TEXTS])
    ls.projects.update(id=project.id, model_version="ours")
    tasks = sorted(ls.tasks.list(project=project.id), key=lambda t: t.id)
    sign_in(browser, label_studio)

    for task, words in zip(tasks[:3], WORDS):  # our predictions, shown by the editor
        open_task(browser, label_studio, project.id, task.id)
        shown = wait_for(lambda: (h := browser.execute_script(HIGHLIGHTED)) and len(h) == len(words) and h, timeout=60)
        assert shown == [w for w, _ in words], (task.data["text"], shown)

    for task, words in zip(tasks[3:], WORDS):  # an annotator's spans, as the editor stores them
        open_task(browser, label_studio, project.id, task.id)
        for word, label in words:
            mark(browser, word, label)
        assert browser.execute_script(HIGHLIGHTED) == sorted((w for w, _ in words), key=task.data["text"].index)
        browser.execute_script("Array.from(document.querySelectorAll('button')).find(b => b.textContent.trim() === 'Submit').click()")
        annotations = wait_for(lambda: ls.tasks.get(task.id).annotations, timeout=60, interval=0.5)
        text = task.data["text"]
        result = annotations[0]["result"] if isinstance(annotations[0], dict) else annotations[0].result
        stored = sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result)
        assert stored == sorted((text.index(w), text.index(w) + len(w), label) for w, label in words), (text, result)
        # what `spans` trains on: the same spans, in the text's own code points
        kept, _, problem = spans.training_spans([spans.Span(*s).encode() for s in stored], text, control.labels)
        assert problem is None and [text[s.start : s.end] for s in kept] == sorted((w for w, _ in words), key=text.index)
