"""End-to-end test of the quiz app (`petbreeds quiz`): Voilà serves the questionnaire, headless Chromium answers a question.

Needs Debian's chromium (`apt-get install -y chromium`) and Playwright for Python (`pip install playwright`, never
`playwright install`: the test drives the system Chromium). Skipped, with the reason, when either is missing.
"""
import json, os, shutil, time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get('PETBREEDS_CHROMIUM', shutil.which('chromium') or '/usr/bin/chromium')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
ARTEFACTS = Path(__file__).resolve().parent.parent/'test-artefacts'

sync_api = pytest.importorskip('playwright.sync_api', reason='Playwright for Python is not installed: pip install playwright')
if not Path(CHROMIUM).exists():
    pytest.skip(f'Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set PETBREEDS_CHROMIUM)', allow_module_level=True)
pytest.importorskip('voila', reason='Voila is not installed: pip install voila')

from petbreeds.quiz import serve_quiz, free_port, Progress

ANSWER = 'Call dls.show_batch() to see a decoded batch of images with their labels.'


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv('PETBREEDS_QUIZ_PROGRESS', str(tmp_path/'progress.json'))
    srv = serve_quiz(port=free_port(), block=False)
    yield srv
    srv.stop()


def _only_local(page, base, blocked):
    "Abort every request that does not go to the quiz server (the page must work offline)."
    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith('data:'): r.continue_()
        else: blocked.append(r.request.url); r.abort()
    page.route('**/*', route)


def test_answer_check_reload(server, tmp_path):
    assert server.progress == tmp_path/'progress.json'
    start, blocked = time.monotonic(), []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={'width': 1100, 'height': 900})
            _only_local(page, server.url.rstrip('/'), blocked)
            page.goto(server.url, timeout=90_000)
            box = page.locator('.quiz-q7 textarea')
            box.wait_for(state='visible', timeout=90_000)
            assert 'What method does fastai provide to view the data in a DataLoaders?' in page.locator('.quiz-q7').inner_text()

            # a trap first: one_batch is not the answer
            box.fill('dls.one_batch()')
            page.locator('.quiz-q7 .quiz-check').click()
            fb = page.locator('.quiz-q7 .quiz-feedback')
            sync_api.expect(fb).to_contain_text('missing: show_batch', timeout=30_000)

            box.fill(ANSWER)
            page.locator('.quiz-q7 .quiz-check').click()
            sync_api.expect(fb).to_contain_text('Looks right', timeout=30_000)
            assert 'show_batch' in fb.inner_text()
            sync_api.expect(page.locator('.quiz-summary')).to_contain_text('1 passed', timeout=10_000)

            page.locator('.quiz-q7 .quiz-show').click()
            sync_api.expect(page.locator('.quiz-q7 .quiz-reference')).to_contain_text('one_batch', timeout=10_000)
            ARTEFACTS.mkdir(exist_ok=True)
            page.locator('.quiz-q7').scroll_into_view_if_needed()
            page.screenshot(path=str(ARTEFACTS/'quiz_app.png'))

            saved = json.loads(server.progress.read_text())['answers']['q7']
            assert (saved['text'], saved['passed']) == (ANSWER, True)

            # a reload starts a new kernel, which reads the answers back
            page.reload(timeout=90_000)
            box = page.locator('.quiz-q7 textarea')
            box.wait_for(state='visible', timeout=90_000)
            sync_api.expect(box).to_have_value(ANSWER, timeout=30_000)
            sync_api.expect(page.locator('.quiz-q7 .quiz-feedback')).to_contain_text('Looks right', timeout=30_000)
            page.screenshot(path=str(ARTEFACTS/'quiz_app_reloaded.png'))
        finally:
            browser.close()
    assert Progress(server.progress).get('q7') == ANSWER
    print(f'quiz app e2e: {time.monotonic()-start:.1f} s; requests blocked (not local): {len(blocked)}', blocked[:5])
