"""`.ci/real_pets.py`, the deploy workflow's step that executes the chapter on the real Oxford-IIIT Pet, run here on a
local stand-in: the sample photos in a tarball laid out like the real archive, served on 127.0.0.1, and stand-in resnet18
weights in torch's hub cache. The executed copies go to a temporary folder and are discarded; the committed notebooks
must not change."""
import functools, http.server, os, subprocess, sys, tarfile, threading
from pathlib import Path
import pytest
from conftest import ROOT, SAMPLE, offline_env, run_python

NOTEBOOK = os.environ.get('PETBREEDS_REAL_PETS_NB', '01_data_layout')

@pytest.fixture(scope='module')
def mirror(tmp_path_factory):
    if not SAMPLE.is_dir(): pytest.skip(f'no real-photo sample at {SAMPLE}')
    root = tmp_path_factory.mktemp('real')
    www = root/'www'; www.mkdir()
    with tarfile.open(www/'oxford-iiit-pet.tgz', 'w:gz') as t:
        for f in sorted(SAMPLE.iterdir()): t.add(f, arcname=f'oxford-iiit-pet/images/{f.name}')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ckpt = root/'torch'/'hub'/'checkpoints'; ckpt.mkdir(parents=True)
    import torch, torchvision
    name = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name   # the file torchvision looks for
    torch.save(torchvision.models.resnet18().state_dict(), ckpt/name)
    yield dict(url=f'http://127.0.0.1:{srv.server_address[1]}/oxford-iiit-pet.tgz', root=root)
    srv.shutdown()

def _status(): return subprocess.run(['git', 'status', '--porcelain', 'nbs', 'images'], cwd=ROOT, capture_output=True, text=True).stdout

def test_real_pets_executes_a_chapter_notebook_into_a_copy(mirror):
    r0 = mirror['root']
    env = offline_env(PETBREEDS_PETS_URL=mirror['url'], TORCH_HOME=r0/'torch', FASTAI_HOME=r0/'fastai',
                      PETBREEDS_HOME=r0/'cache', MPLBACKEND='Agg', PYTHONPATH=ROOT)
    before = _status()
    r = run_python(['-W', 'ignore', str(ROOT/'.ci'/'real_pets.py'), '--dest', str(r0/'site'), NOTEBOOK],
            env=env, timeout=1500)
    assert r.returncode == 0, r.out[-3000:]
    assert 'quick: asked for — using Oxford-IIIT Pet' in r.out, r.out[-2000:]
    import nbformat
    nb = nbformat.read(r0/'site'/f'{NOTEBOOK}.ipynb', as_version=4)
    outs = ' '.join(o.get('text', '') + str(o.get('data', {}).get('text/plain', ''))
                    for c in nb.cells for o in c.get('outputs', []))
    assert 'using synthetic pets' not in outs and 'using Oxford-IIIT Pet' in outs, outs[-2000:]   # ran on the photos
    assert (r0/'fastai'/'data'/'oxford-iiit-pet'/'images').is_dir()      # downloaded and extracted from the stand-in
    assert _status() == before                                           # nothing in the repository changed

def test_real_pets_fails_in_one_line_without_the_data(tmp_path):
    env = offline_env(PETBREEDS_PETS_URL='http://127.0.0.1:9/oxford-iiit-pet.tgz', FASTAI_HOME=tmp_path/'fastai',
                      TORCH_HOME=tmp_path/'torch', PYTHONPATH=ROOT)
    r = run_python(['-W', 'ignore', str(ROOT/'.ci'/'real_pets.py'), '--dest', str(tmp_path/'site')], env=env)
    assert r.returncode != 0 and 'Traceback' not in r.out
    assert r.out.strip().startswith('real_pets: The quick profile needs Oxford-IIIT Pet'), r.out
