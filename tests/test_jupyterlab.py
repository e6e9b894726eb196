"""Every notebook opens in JupyterLab as a learner opens it: no "Select Kernel" prompt, and the file is not rewritten.

JupyterLab (a dev requirement) serves a copy of the repository's `nbs/` and `settings.ini` on 127.0.0.1 with a token,
with the Jupyter hook `nbdev_install_hooks` installs (README says to run it once); headless Debian Chromium (driven by
Playwright for Python, never `playwright install`) opens every notebook, waits past a 2-second autosave interval,
closes them, and the bytes on disk must be the committed ones. Without the hook JupyterLab's autosave writes the
kernel's `language_info` and display name into every notebook it opens: nothing petbreeds can prevent from inside a
notebook (nbdev_clean strips both), which is why nbdev ships the hook.
Skipped, with the reason, when Chromium or Playwright is missing.
"""
import difflib, json, os, shutil, time
from pathlib import Path

import pytest
from conftest import CHROMIUM, jupyter_lab, lab_api, lab_page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))

sync_api = pytest.importorskip('playwright.sync_api', reason='Playwright for Python is not installed: pip install playwright')
if not Path(CHROMIUM).exists():
    pytest.skip(f'Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set PETBREEDS_CHROMIUM)',
                allow_module_level=True)
pytest.importorskip('jupyterlab', reason='JupyterLab is not installed: pip install jupyterlab')


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    """JupyterLab started in a copy of the repository (`nbs/` and `settings.ini`), as a learner starts it in a clone, with
    its own config, data and workspace folders; yields (base URL, token, the copy's nbs/)."""
    tmp = tmp_path_factory.mktemp('lab')
    root = tmp/'nbs'
    shutil.copytree(ROOT/'nbs', root)
    shutil.copy(ROOT/'settings.ini', tmp)                 # the hook reads `jupyter_hooks` and nbdev_clean's settings
    (tmp/'config').mkdir()
    from nbdev.clean import _pre_save_hook_src           # exactly what `nbdev_install_hooks` adds to the config
    (tmp/'config'/'jupyter_server_config.py').write_text(_pre_save_hook_src+'\n')
    with jupyter_lab(tmp, dict(os.environ)) as (base, token):
        # autosave after 2 s instead of 120 s, so that a rewrite on opening would reach the disk within the test
        lab_api(base, token, '/lab/api/settings/@jupyterlab/docmanager-extension:plugin', 'PUT',
                {'raw': json.dumps({'autosave': True, 'autosaveInterval': 2})})
        yield base, token, root


def _wait_for_saves(files, quiet:float=2.0, timeout:float=30.0):
    "Wait until none of `files` has changed for `quiet` seconds: Jupyter saves in place, so a save in progress reads as partial."
    end, last = time.time()+timeout, None
    while time.time() < end:
        now = [(st.st_mtime_ns, st.st_size) for st in map(Path.stat, files)]
        if now == last: return
        last = now
        time.sleep(quiet)

@pytest.mark.slow   # JupyterLab and Chromium open every notebook
def test_notebooks_open_without_kernel_prompt_and_unchanged(lab):
    base, token, root = lab
    before = {nb: (ROOT/'nbs'/nb).read_bytes() for nb in NOTEBOOKS}
    prompts = []
    with lab_page(base, token) as page:
        for nb in NOTEBOOKS:   # all of them open at once (one tab each), as a learner browsing the chapter might
            page.evaluate('p => { window.jupyterapp.commands.execute("docmanager:open", {path: p}); }', f'nbs/{nb}')
            page.locator('.jp-NotebookPanel:visible .jp-Cell').first.wait_for(timeout=300_000)
        page.wait_for_timeout(5_000)   # past the 2 s autosave interval, and time for a kernel dialog to show
        if page.locator('.jp-Dialog', has_text='Select Kernel').count(): prompts.append('a notebook')
        page.keyboard.press('Escape')
        page.evaluate('() => { window.jupyterapp.commands.execute("application:close-all"); }')
        page.wait_for_timeout(1_000)
        _wait_for_saves([root/nb for nb in NOTEBOOKS])
        changed = [nb for nb in NOTEBOOKS if (root/nb).read_bytes() != before[nb]]
    assert not prompts, 'JupyterLab asked "Select Kernel": give every notebook a kernelspec (python3)'
    hook_errors = [l for l in (root.parent/'lab.log').read_text().splitlines() if 'hook' in l and 'failed' in l]
    assert not hook_errors, hook_errors[:3]
    diff = ''.join(list(difflib.unified_diff(before[changed[0]].decode().splitlines(True), (root/changed[0]).read_text().splitlines(True),
                                             changed[0], 'after'))[:40]) if changed else ''
    assert not changed, f'opening in JupyterLab (with nbdev\'s Jupyter hook) rewrote {len(changed)} notebooks: {changed[:3]}\n{diff}'
