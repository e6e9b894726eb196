"Every notebook runs under `nbdev_test` in the offline profile, and several also on real photos given as your own folder."
import pytest
from conftest import ROOT, SAMPLE, offline_env, run

NBS = sorted((ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NBS, ids=[o.stem for o in NBS])
def test_notebook_offline(nb):
    r = run(['nbdev_test', '--path', str(nb.relative_to(ROOT)), '--do_print'])
    assert r.returncode==0, r.out[-6000:]

# The 148 real Oxford-IIIT Pet photos in ../shared are test data only: used here, never committed.
# The data notebooks, and the ones whose checks depend on what a model learns (see `check_claim`). The others were run on
# the photos by hand (05, 07, 08, 10: 12-100 s each) and are left out to keep CI short.
REAL = ['01_data_layout', '02_presizing', '04_interpretation', '07_architectures', '12_cli']

@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f'no real photo sample at {SAMPLE}')
@pytest.mark.parametrize('name', REAL)
def test_notebook_on_real_photos(name):
    r = run(['nbdev_test', '--path', f'nbs/{name}.ipynb', '--do_print'], env=offline_env(PETBREEDS_DATA=SAMPLE))
    assert r.returncode==0, r.out[-6000:]
