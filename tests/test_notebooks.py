"""Every notebook runs as `nbdev_test` runs it (nbdev's `test_nb`, the same skip flags, from `nbs/`), in the offline
profile, and several also on real photos given as your own folder. Each runs in a fresh process forked from a server that
has already imported fastai, so no notebook pays for that import again and none can see another's state.
In the default tier `#| slow` cells are skipped, as `nbdev_test` skips them; with `--slow` they run (see conftest.py)."""
import json, os, re, sys
from pathlib import Path
import pytest
from conftest import ROOT, SAMPLE, in_child, offline_env, slow_tier

NBS = sorted((ROOT/'nbs').glob('*.ipynb'))

def has_slow_cells(nb:Path)->bool:
    "Does notebook `nb` have `#| slow` cells?"
    return any(c['cell_type']=='code' and re.search(r'^#\|\s*slow\b', ''.join(c['source']), re.M)
               for c in json.loads(nb.read_text())['cells'])

def _run_nb(nb:str, slow:bool=False):
    "In the fork server's child: the notebook as a fresh `nbdev_test --path nb [--flags slow]` would run it; exit 0 if it passed."
    from nbdev.config import get_config
    from nbdev.test import test_nb
    cfg = get_config()
    flags = [f for f in cfg.tst_flags.split() if not (slow and f=='slow')]
    ok, secs = test_nb(Path(nb), skip_flags=flags, basepath=cfg.config_path, do_print=True)
    print(f'{Path(nb).name}: {"passed" if ok else "FAILED"} in {secs:.1f} s', flush=True)
    sys.stderr.flush()
    os._exit(0 if ok else 1)

def run_notebook(nb:Path, env:dict, log:Path, timeout=900, slow:bool=False)->tuple:
    "(exit code, output) of notebook `nb` run in a child of the fork server (exit code `None`: it timed out)."
    rc = in_child(_run_nb, (str(nb), slow), env, ROOT/'nbs', log, timeout=timeout)
    out = log.read_text(errors='replace') if log.exists() else ''
    print(out)   # pytest shows it when the test fails
    return rc, out

# a notebook with slow cells belongs to both tiers: the default one without them, the slow one with them
@pytest.mark.parametrize('nb', [pytest.param(o, marks=pytest.mark.slow_cells) if has_slow_cells(o) else o for o in NBS],
                         ids=[o.stem for o in NBS])
def test_notebook_offline(nb, tmp_path, request):
    slow = slow_tier(request.config)   # with its slow cells 07 alone takes about 15 minutes on 2 cores
    rc, out = run_notebook(nb, offline_env(), tmp_path/'out.log', timeout=2400 if slow else 900, slow=slow)
    assert rc==0, out[-6000:]

# The 148 real Oxford-IIIT Pet photos in ../shared are test data only: used here, never committed.
# The data notebooks and the command line (`test_real_pets` runs 01 on the same photos as the real data set). The notebooks
# whose checks depend on what a model learns (see `check_claim`) were run on the photos by hand (03-08, 10: 10-350 s
# each) and are left out to keep CI short.
REAL = ['01_data_layout', '02_presizing', '12_cli']

@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f'no real photo sample at {SAMPLE}')
@pytest.mark.parametrize('name', REAL)
def test_notebook_on_real_photos(name, tmp_path):
    rc, out = run_notebook(ROOT/'nbs'/f'{name}.ipynb', offline_env(PETBREEDS_DATA=SAMPLE), tmp_path/'out.log')
    assert rc==0, out[-6000:]
