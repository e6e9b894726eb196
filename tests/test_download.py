"""The real download path, tested offline: a local HTTP server on 127.0.0.1 serves a small tarball in the
real `oxford-iiit-pet/images` layout, and a resnet18 state dict in `$TORCH_HOME/hub/checkpoints` stands in for
the ImageNet weights, so the automatic profile choice, `untar_data` and the subset all run for real."""
import http.server, tarfile, threading, io, sys, functools
from pathlib import Path
import pytest
from PIL import Image
from conftest import offline_env, run

BREEDS = ['Abyssinian', 'Birman', 'beagle', 'great_pyrenees', 'pug']

@pytest.fixture(scope='module')
def mirror(tmp_path_factory):
    "A local 'internet': a tarball like URLs.PETS on 127.0.0.1, torch's hub cache with resnet18."
    root = tmp_path_factory.mktemp('mirror')
    src = root/'src'/'oxford-iiit-pet'
    (src/'images').mkdir(parents=True); (src/'annotations').mkdir()
    for i,b in enumerate(BREEDS):
        for n in range(1, 5):
            Image.new('RGB', (120+10*n, 90+7*i), (40*i, 60*n, 100)).save(src/'images'/f'{b}_{n}.jpg')
    (src/'images'/'Abyssinian_100.mat').write_bytes(b'MATLAB 5.0')   # the real tarball has a few of these
    (src/'annotations'/'list.txt').write_text('#Image CLASS-ID SPECIES BREED ID\n')
    served = root/'www'; served.mkdir()
    with tarfile.open(served/'oxford-iiit-pet.tgz', 'w:gz') as t: t.add(src, arcname='oxford-iiit-pet')
    (served/'broken.tgz').write_bytes(b'this is not a tarball')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    torch_home = root/'torch'; (torch_home/'hub'/'checkpoints').mkdir(parents=True)
    import torch, torchvision
    torch.save(torchvision.models.resnet18().state_dict(), torch_home/'hub'/'checkpoints'/'resnet18-f37072fd.pth')
    yield dict(url=f'http://127.0.0.1:{srv.server_address[1]}', torch_home=torch_home, home=root/'fastai', cache=root/'cache')
    srv.shutdown()

def _env(m, url, **kw):
    env = offline_env(**{**dict(PETBREEDS_PETS_URL=url, FASTAI_HOME=m['home'], TORCH_HOME=m['torch_home'], PETBREEDS_HOME=m['cache']), **kw})
    if 'PETBREEDS_PROFILE' not in kw: env.pop('PETBREEDS_PROFILE')
    return env

SCRIPT = '''
from petbreeds.profiles import get_profile
from petbreeds.data import pets_path, get_pet_files
p = get_profile(timeout=2)
files = get_pet_files(pets_path(p), per_breed=p.per_breed)
print('profile', p.name, 'files', len(files), 'breeds', len(set(f.name.rsplit('_',1)[0] for f in files)))
'''

def test_auto_profile_downloads_real_layout(mirror):
    r = run([sys.executable, '-W', 'ignore', '-c', SCRIPT], env=_env(mirror, mirror['url']+'/oxford-iiit-pet.tgz'))
    assert r.returncode==0, r.out
    assert 'quick: no GPU, data and weights reachable — using Oxford-IIIT Pet (16 per breed) and resnet18' in r.out
    assert 'profile quick files 20 breeds 5' in r.out
    assert 'Abyssinian_100.mat (not an image file)' in r.out      # skipped, with a one-line report
    assert (Path(mirror['home'])/'data'/'oxford-iiit-pet'/'images').is_dir()
    # the second time nothing is downloaded: the cached copy counts even with the server gone
    r = run([sys.executable, '-W', 'ignore', '-c', SCRIPT], env=_env(mirror, 'http://127.0.0.1:9/oxford-iiit-pet.tgz'))
    assert 'quick' in r.out and 'profile quick files 20' in r.out, r.out

def test_failed_download_falls_back_with_one_line(mirror):
    r = run([sys.executable, '-W', 'ignore', '-c', SCRIPT], env=_env(mirror, mirror['url']+'/broken.tgz'))
    assert r.returncode==0, r.out
    assert 'Traceback' not in r.out
    assert 'offline: Could not download Oxford-IIIT Pet from' in r.out and '— using synthetic pets' in r.out
    assert 'profile quick files' in r.out

def test_forced_profile_fails_clearly(mirror):
    env = _env(mirror, mirror['url']+'/broken.tgz', PETBREEDS_PROFILE='quick')
    r = run([sys.executable, '-W', 'ignore', '-c', SCRIPT], env=env)
    assert r.returncode!=0
    assert 'DataError: Could not download Oxford-IIIT Pet' in r.out and 'PETBREEDS_PROFILE=offline' in r.out

def test_unreachable_means_offline(mirror):
    r = run([sys.executable, '-W', 'ignore', '-c', SCRIPT], env=_env(mirror, 'http://127.0.0.1:9/nothing.tgz', FASTAI_HOME=mirror['cache']/'empty'))
    assert r.returncode==0, r.out
    assert 'offline: http://127.0.0.1:9/nothing.tgz unreachable — using synthetic pets' in r.out
