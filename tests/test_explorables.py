"""The chapter's explorables as a learner uses them: JupyterLab opens nbs/03_cross_entropy.ipynb, runs the cells the
widgets need (as Shift+Enter would), a slider of the bear table moves and the loss on the page changes to what
`loss_table` computes, and a photo uploaded to the "your own pet" widget comes back with five breeds. The upload needs
the chapter's learner, trained in the notebook first, so that test is in the slow tier; the slider's is not.

JupyterLab (a dev requirement) serves a copy of `nbs/` on 127.0.0.1 with a token; its kernels import this checkout's
petbreeds (PYTHONPATH) in the offline profile, on a small folder of synthetic pets (six per breed, drawn once by the
test run's cache warming), so that training the chapter's learner takes seconds rather than minutes. Headless Debian
Chromium, driven by Playwright for Python (never `playwright install`), does the clicking; the page may reach nothing
but the server. Skipped, with the reason, when Chromium, Playwright or JupyterLab is missing.
"""
import json, os, re, shutil, time
from pathlib import Path

import pytest
from conftest import CHROMIUM, jupyter_lab, lab_api, lab_page

ROOT = Path(__file__).resolve().parent.parent

sync_api = pytest.importorskip('playwright.sync_api', reason='Playwright for Python is not installed: pip install playwright')
if not Path(CHROMIUM).exists():
    pytest.skip(f'Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set PETBREEDS_CHROMIUM)',
                allow_module_level=True)
pytest.importorskip('jupyterlab', reason='JupyterLab is not installed: pip install jupyterlab')
pytest.importorskip('ipywidgets', reason='ipywidgets is not installed: pip install ipywidgets')

NB = 'nbs/03_cross_entropy.ipynb'
# the cells each widget needs, found by a line of their source, in the order a learner runs them
IMPORTS = ['from petbreeds.explore import']
SOFTMAX = ["softmax_explorer(target='grizzly')"]
LEARNER = ['profile = get_profile()', 'images = pets_path(**profile.path_args)', 'learn.fine_tune(epochs)']
UPLOAD = ['pet_upload(learn, profile)']


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on a copy of `nbs/`, its kernels on this checkout's petbreeds and a small synthetic set: (base URL, token)."
    from petbreeds.synthetic_set import make_synthetic_pets
    tmp = tmp_path_factory.mktemp('explore-lab')
    shutil.copytree(ROOT/'nbs', tmp/'nbs')
    shutil.copy(ROOT/'settings.ini', tmp)
    env = {k: v for k, v in os.environ.items() if k not in ('MPLBACKEND', 'PETBREEDS_PETS_URL')}   # a learner's kernel
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               PETBREEDS_PROFILE='offline', PETBREEDS_DATA=str(make_synthetic_pets(6, seed=1, verbose=False)))
    with jupyter_lab(tmp, env) as (base, token):
        # every cell in the page (JupyterLab 4 may leave cells out of view out of the page until scrolled to)
        lab_api(base, token, '/lab/api/settings/@jupyterlab/notebook-extension:tracker', 'PUT',
                {'raw': json.dumps({'windowingMode': 'none'})})
        yield base, token


# Run the first cell holding each needle, one after the other, as Shift+Enter would, and wait for each to finish;
# returns, per cell, its index and any error it raised.
_RUN_CELLS = '''async (needles) => {
  const app = window.jupyterapp, panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  const nb = panel.content, done = [];
  for (const needle of needles) {
    const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes(needle));
    if (i < 0) { done.push({needle, error: 'no such cell'}); break; }
    nb.activeCellIndex = i;
    const t0 = performance.now();
    await app.commands.execute('notebook:run-cell');
    const s = (performance.now() - t0)/1000;
    nb.widgets[i].node.scrollIntoView({block: 'center'});
    const err = nb.widgets[i].model.outputs.toJSON().find(o => o.output_type === 'error');
    done.push({needle, index: i, s, error: err ? `${err.ename}: ${err.evalue}` : null});
    if (err) break;
  }
  return done;
}'''


@pytest.fixture
def notebook(lab):
    "A Chromium page with 03 open in JupyterLab, its kernel started; only the server can be reached."
    base, token = lab
    with lab_page(base, token, 1300, 1000) as page:
        page.evaluate('p => { window.jupyterapp.commands.execute("docmanager:open", {path: p}); }', NB)
        page.locator('.jp-NotebookPanel:visible .jp-Cell').first.wait_for(timeout=300_000)
        yield page


def run_cells(page, needles):
    "Run the cells holding `needles` in the open notebook; fail with the first error."
    done = page.evaluate(_RUN_CELLS, needles)
    bad = [d for d in done if d['error']]
    assert not bad and len(done) == len(needles), f'cells failed: {bad or done}'
    print(', '.join(f"{d['needle'][:20]!r} {d['s']:.1f} s" for d in done))
    return [d['index'] for d in done]


def test_softmax_slider_moves_the_loss(notebook):
    from petbreeds.explore import loss_table
    page = notebook
    t = time.monotonic()
    run_cells(page, IMPORTS + SOFTMAX)
    box = page.locator('.explore-softmax')
    value = box.locator('.explore-loss-value')
    sync_api.expect(value).to_have_text(f'{loss_table(target="grizzly")[1]:.3f}', timeout=120_000)
    before = value.inner_text()
    grizzly = box.locator('.widget-slider').first
    grizzly.locator('.noUi-handle').focus()
    for _ in range(5): page.keyboard.press('PageUp')      # the grizzly's activation up, as a learner drags it
    sync_api.expect(value).not_to_have_text(before, timeout=60_000)
    readout = grizzly.locator('.widget-readout')
    want = lambda: f'{loss_table([float(readout.inner_text()), -2.49, 1.25], "grizzly")[1]:.3f}'
    end = time.monotonic() + 60                         # the kernel answers the last move last
    while value.inner_text() != want() and time.monotonic() < end: page.wait_for_timeout(250)
    assert float(readout.inner_text()) > 0.02 and value.inner_text() == want(), (readout.inner_text(), value.inner_text())
    assert float(value.inner_text()) < float(before)    # a likelier grizzly, a smaller loss
    print(f'slider: activation {readout.inner_text()}, loss {before} -> {value.inner_text()} ({time.monotonic()-t:.0f} s)')


@pytest.mark.slow   # it trains the chapter's learner first (1 + 1 epochs on 222 drawings): minutes on a busy 2-core machine
def test_upload_a_photo_shows_five_breeds(notebook, tmp_path):
    from petbreeds.data import BREEDS
    from petbreeds.explore import chelsea_photo
    page = notebook
    t = time.monotonic()
    run_cells(page, IMPORTS + LEARNER + UPLOAD)
    trained = time.monotonic() - t
    with page.expect_file_chooser() as chooser:          # the button opens the browser's file dialog
        page.locator('.explore-upload').click()
    chooser.value.set_files(str(chelsea_photo(tmp_path)))
    breeds = page.locator('.explore-result .explore-breeds li')
    sync_api.expect(breeds).to_have_count(5, timeout=120_000)
    rows = [re.fullmatch(r'(\w+) ([\d.]+)%', b.strip()) for b in breeds.all_inner_texts()]
    assert all(rows) and {m[1] for m in rows} <= set(BREEDS), breeds.all_inner_texts()
    probs = [float(m[2]) for m in rows]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.05, probs
    assert 'chelsea.png' in page.locator('.explore-result').inner_text()
    print(f'upload: {breeds.all_inner_texts()} ({trained:.0f} s to train the learner, {time.monotonic()-t:.0f} s in all)')
