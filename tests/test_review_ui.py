"""The review UI in a real browser: Playwright driving Debian's chromium, signed in to the
session's Argilla as an annotator, reviews one pushed rationale with "needs edit" and an edited
text; ``cotforge review pull`` then holds the edit as a new, verified version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cotforge.argilla_stack import ArgillaStack
from cotforge.review import pull, push
from cotforge.store import Store
from tests.fixtures.argilla import CHROMIUM, browser_missing, need
from tests.review_helpers import copy_store, edited, generate_store, options

pytestmark = pytest.mark.slow

DATASET = "ui-review"
TIMEOUT_MS = 60_000
STAGE_TITLES = (
    "1. Analysis of visual features",
    "2. Candidate sub-categories",
    "3. Comparison of the candidates",
    "4. Prediction",
)


def test_annotator_edits_a_rationale_in_the_ui(
    argilla_stack: ArgillaStack, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    need(browser_missing())
    from playwright.sync_api import sync_playwright

    store = copy_store(generate_store(tmp_path_factory.mktemp("ui-store"))[0], tmp_path)
    opts = options(argilla_stack, DATASET)
    with Store.open(store) as db:
        push(db, opts)
        rows = db.review_candidates(only="all").select("rationale_id", "text", "class_name")
    user = argilla_stack.annotators[0]
    url = argilla_stack.url
    submitted = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/sign-in")
            page.wait_for_load_state("networkidle")
            page.locator("input").nth(0).fill(user.username)
            page.locator("input[type=password]").fill(user.password)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{url}/")
            page.get_by_text(DATASET).first.click()
            page.get_by_text("needs edit").first.wait_for()

            # the image and the four stages, each in its own field
            image = page.locator("img[src^='data:image/jpeg;base64,']")
            assert image.count() == 1 and image.first.is_visible()
            for title in STAGE_TITLES:
                assert page.get_by_text(title, exact=True).is_visible(), title

            # the record shown is one of its class's (whose texts are alike here)
            shown_class = page.get_by_text("(aircraft)").first.inner_text().rsplit(" (", 1)[0]
            of_class = rows.filter(class_name=shown_class)
            assert of_class.height == 2
            text = of_class["text"][0]
            new_text = edited(text)

            page.get_by_text("needs edit").first.click()
            # the pre-filled suggestion switches to an editor when clicked
            page.get_by_text(text.splitlines()[1]).last.click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.keyboard.insert_text(new_text)
            page.on(
                "response",
                lambda r: submitted.append(r.status) if r.url.endswith("/responses") else None,
            )
            page.get_by_role("button", name="Submit").click()
            page.wait_for_timeout(2000)
            page.screenshot(path=str(tmp_path / "after-submit.png"), full_page=True)
        finally:
            browser.close()
    assert submitted == [201]
    assert (tmp_path / "after-submit.png").stat().st_size > 0

    with Store.open(store) as db:
        summary = pull(db, opts)
        version = db.table("rationales", where={"parent_id": of_class["rationale_id"].to_list()})
        verdicts = db.table("verdicts", where={"rationale_id": version["rationale_id"].to_list()})
        review = db.table("reviews", where={"reviewer": user.username})
    assert summary.new_versions == 1
    assert review["rationale_id"].to_list() == version["parent_id"].to_list()
    assert version.height == 1 and version["version"][0] == 2
    assert "A reviewer adds: the wing tips are clearly visible." in version["raw_text"][0]
    assert verdicts.height == 7 and verdicts["passed"].all()
    assert review["decision"].to_list() == ["edit"]
