"""The real download path, tested offline: a local HTTP server on 127.0.0.1 serves a small tarball in the
real `oxford-iiit-pet/images` layout, and a resnet18 state dict in `$TORCH_HOME/hub/checkpoints` stands in for
the ImageNet weights, so the automatic profile choice, the download and the subset all run for real.
Hostile mirrors too: a silent server, a 404, a transfer cut short, and crafted tarballs (`../` members, absolute names,
links pointing outside, devices, a truncated archive, one without `images/`)."""
import http.server, tarfile, threading, io, os, sys, functools
from pathlib import Path
import pytest
from PIL import Image
from conftest import offline_env, run_python

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
    # the synthetic pets a fallback to offline uses: the ones the test run drew once (conftest's warm_caches), only read here
    yield dict(url=f'http://127.0.0.1:{srv.server_address[1]}', torch_home=torch_home, home=root/'fastai',
               cache=Path(os.environ['PETBREEDS_HOME']), root=root)
    srv.shutdown()

def _env(m, url, **kw):
    env = offline_env(**{**dict(PETBREEDS_PETS_URL=url, FASTAI_HOME=m['home'], TORCH_HOME=m['torch_home'], PETBREEDS_HOME=m['cache']), **kw})
    if 'PETBREEDS_PROFILE' not in kw: env.pop('PETBREEDS_PROFILE')
    return env

SCRIPT = '''
from petbreeds.profiles import get_profile
from petbreeds.data import pets_path, get_pet_files
p = get_profile(timeout=2)
files = get_pet_files(pets_path(**p.path_args), per_breed=p.per_breed)
print('profile', p.name, 'files', len(files), 'breeds', len(set(f.name.rsplit('_',1)[0] for f in files)))
'''

def test_auto_profile_downloads_real_layout(mirror):
    r = run_python(['-W', 'ignore', '-c', SCRIPT], env=_env(mirror, mirror['url']+'/oxford-iiit-pet.tgz'))
    assert r.returncode==0, r.out
    assert 'quick: no GPU, data and weights reachable — using Oxford-IIIT Pet (16 per breed) and resnet18' in r.out
    assert 'profile quick files 20 breeds 5' in r.out
    assert 'Abyssinian_100.mat (not an image file)' in r.out      # skipped, with a one-line report
    assert (Path(mirror['home'])/'data'/'oxford-iiit-pet'/'images').is_dir()
    # the second time nothing is downloaded: the cached copy counts even with the server gone
    r = run_python(['-W', 'ignore', '-c', SCRIPT], env=_env(mirror, 'http://127.0.0.1:9/oxford-iiit-pet.tgz'))
    assert 'quick' in r.out and 'profile quick files 20' in r.out, r.out

def test_failed_download_falls_back_with_one_line(mirror):
    r = run_python(['-W', 'ignore', '-c', SCRIPT], env=_env(mirror, mirror['url']+'/broken.tgz'))
    assert r.returncode==0, r.out
    assert 'Traceback' not in r.out
    assert 'offline: Could not download Oxford-IIIT Pet: broken.tgz is not a complete tar archive' in r.out and '— using synthetic pets' in r.out
    assert 'profile quick files' in r.out

def test_forced_profile_fails_clearly(mirror):
    env = _env(mirror, mirror['url']+'/broken.tgz', PETBREEDS_PROFILE='quick')
    r = run_python(['-W', 'ignore', '-c', SCRIPT], env=env)
    assert r.returncode!=0
    assert 'DataError: Could not download Oxford-IIIT Pet' in r.out and 'PETBREEDS_PROFILE=offline' in r.out

def test_unreachable_means_offline(mirror):
    r = run_python(['-W', 'ignore', '-c', SCRIPT], env=_env(mirror, 'http://127.0.0.1:9/nothing.tgz', FASTAI_HOME=mirror['root']/'empty'))
    assert r.returncode==0, r.out
    assert 'offline: http://127.0.0.1:9/nothing.tgz unreachable — using synthetic pets' in r.out


# --- hostile mirrors: in-process, each case a few hundred milliseconds ---
import os, socket, tarfile, time
from petbreeds.data import download_pets, DataError
from petbreeds.download import get_dataset, download_file, safe_extract, check_member, _data_filter, DownloadError, UnsafeArchive

def _m(name, type=tarfile.REGTYPE, linkname='', data=None):
    m = tarfile.TarInfo(name); m.type, m.linkname = type, linkname
    if data is not None: m.size = len(data)
    return m, (io.BytesIO(data) if data is not None else None)

def _tar(fname, *members):
    with tarfile.open(fname, 'w:gz') as t:
        for m,f in members: t.addfile(m, f)
    return fname

OK_IMG = ('pets/images/Birman_1.jpg', tarfile.REGTYPE, '', b'jpeg')
HOSTILE = {
    'dotdot':    [('pets/../../escaped.txt', tarfile.REGTYPE, '', b'x')],
    'absolute':  [('/tmp/petbreeds-escaped.txt', tarfile.REGTYPE, '', b'x')],
    'symlink':   [('pets/images/link', tarfile.SYMTYPE, '../../../outside', None)],
    'abs_link':  [('pets/images/passwd', tarfile.SYMTYPE, '/etc/passwd', None)],
    'hardlink':  [('pets/images/hard', tarfile.LNKTYPE, '../outside', None)],
    'through':   [('pets/y', tarfile.SYMTYPE, '.', None), ('pets/y/../../escaped.txt', tarfile.REGTYPE, '', b'x')],
    'device':    [('pets/images/null', tarfile.CHRTYPE, '', None)],
    'blockdev':  [('pets/images/sda', tarfile.BLKTYPE, '', None)],
    'fifo':      [('pets/images/fifo', tarfile.FIFOTYPE, '', None)],
}

@pytest.fixture
def www(tmp_path):
    "A local server over a folder, and a silent one that accepts connections and never answers."
    served = tmp_path/'www'; served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    silent = socket.create_server(('127.0.0.1', 0))
    yield dict(dir=served, url=f'http://127.0.0.1:{srv.server_address[1]}', silent=f'http://127.0.0.1:{silent.getsockname()[1]}/oxford-iiit-pet.tgz')
    srv.shutdown(); silent.close()

def _clean(dest):
    "Nothing left behind in `dest` but empty folders and the lock."
    return sorted(str(p.relative_to(dest)) for p in dest.rglob('*') if p.is_file() and not p.name.endswith('.lock'))

@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_tarball_refused_and_removed(www, tmp_path, case):
    _tar(www['dir']/'oxford-iiit-pet.tgz', *[_m(*o) for o in [OK_IMG, *HOSTILE[case]]])
    dest = tmp_path/'data'
    with pytest.raises(DataError) as e: download_pets(www['url']+'/oxford-iiit-pet.tgz', dest, show_progress=False)
    msg = str(e.value)
    assert '\n' not in msg and 'Could not download Oxford-IIIT Pet' in msg, msg
    assert any(w in msg for w in ('outside the folder', 'absolute', 'device, fifo')), msg
    assert _clean(dest) == [], _clean(dest)                    # the archive and any partial extraction are gone
    assert not (tmp_path/'escaped.txt').exists() and not (tmp_path/'outside').exists()
    assert not Path('/tmp/petbreeds-escaped.txt').exists()
    # the mirror is fixed: the next try starts clean and works
    _tar(www['dir']/'oxford-iiit-pet.tgz', _m(*OK_IMG))
    assert (download_pets(www['url']+'/oxford-iiit-pet.tgz', dest, show_progress=False)/'images'/'Birman_1.jpg').exists()

@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_fallback_filter_agrees_with_tarfile(tmp_path, case):
    "On Pythons without `tarfile.data_filter`, `_data_filter` applies the same rules."
    if not hasattr(tarfile, 'data_filter'): pytest.skip('this Python has no tarfile.data_filter to compare with')
    fn = _tar(tmp_path/'a.tgz', *[_m(*o) for o in [OK_IMG, *HOSTILE[case]]])
    for f in (None, _data_filter):
        with pytest.raises(UnsafeArchive): safe_extract(fn, tmp_path/'out', data_filter=f)
        assert _clean(tmp_path/'out') == []
    for name, typ in [('pets/images/Birman_1.jpg', tarfile.REGTYPE), ('pets/images', tarfile.DIRTYPE)]:
        a, b = check_member(_m(name, typ)[0], tmp_path), check_member(_m(name, typ)[0], tmp_path, _data_filter)
        assert (a.name, a.type) == (b.name, b.type)
        if a.isreg(): assert a.mode == b.mode     # the `data` filter leaves a folder's mode to the system

def test_truncated_and_imageless_archives_are_not_cached(www, tmp_path):
    good = _tar(tmp_path/'good.tgz', _m(*OK_IMG), _m('pets/images/pug_1.jpg', data=os.urandom(50_000)))
    dest, url = tmp_path/'data', www['url']+'/oxford-iiit-pet.tgz'
    (www['dir']/'oxford-iiit-pet.tgz').write_bytes(good.read_bytes()[:20_000])
    with pytest.raises(DataError, match='not a complete tar archive'): download_pets(url, dest, show_progress=False)
    assert _clean(dest) == []
    _tar(www['dir']/'oxford-iiit-pet.tgz', _m('pets/photos/Birman_1.jpg', data=b'jpeg'))
    with pytest.raises(DataError, match='has no images/ folder'): download_pets(url, dest, show_progress=False)
    assert _clean(dest) == []
    (www['dir']/'oxford-iiit-pet.tgz').write_bytes(good.read_bytes())
    assert len(list((download_pets(url, dest, show_progress=False)/'images').iterdir())) == 2
    # an extraction that lost its images/ (deleted by hand, an older broken cache) is redone, not trusted
    import shutil; shutil.rmtree(dest/'oxford-iiit-pet'/'images')
    assert (download_pets(url, dest, show_progress=False)/'images').is_dir()

def test_silent_server_times_out(www, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e: download_pets(www['silent'], tmp_path/'data', read_timeout=1, show_progress=False)
    assert time.perf_counter()-t0 < 10
    assert 'the server sent nothing for 1 s' in str(e.value) and '\n' not in str(e.value)
    assert _clean(tmp_path/'data') == []

@pytest.mark.slow   # waits for the 30 s read timeout
def test_silent_mirror_does_not_hang(www, tmp_path):
    "`download_pets` with its default timeouts, in another process, against a mirror that never answers: a line in ~30 s."
    script = ('import time\nfrom petbreeds.data import download_pets\nt0 = time.perf_counter()\n'
              'try: download_pets()\nexcept Exception as e: print(type(e).__name__, e)\nprint(f"took {time.perf_counter()-t0:.0f} s")')
    r = run_python(['-W', 'ignore', '-c', script], env=_env(dict(home=tmp_path/'fastai', torch_home=tmp_path, cache=tmp_path), www['silent']), timeout=300)
    assert 'DataError Could not download Oxford-IIIT Pet: ' in r.out and 'the server sent nothing for 30 s' in r.out, r.out
    took = int(r.out.split('took ')[1].split()[0])
    assert 29 <= took < 60, r.out     # the read timeout, not forever (imports alone can take a minute on a busy machine)

def test_404_is_one_line(www, tmp_path):
    with pytest.raises(DataError) as e: download_pets(www['url']+'/missing/oxford-iiit-pet.tgz', tmp_path/'data')
    msg = str(e.value)
    assert '404 Not Found' in msg and '<' not in msg and '\n' not in msg, msg

def _cut_server(n_claimed, payload):
    "A server that promises `n_claimed` bytes, sends `payload` and hangs up."
    s = socket.create_server(('127.0.0.1', 0))
    def serve():
        c,_ = s.accept(); c.recv(65536)
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/x-gzip\r\n\r\n' % n_claimed + payload)
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    return s, f'http://127.0.0.1:{s.getsockname()[1]}/oxford-iiit-pet.tgz'

def test_transfer_cut_short_leaves_nothing(tmp_path):
    s, url = _cut_server(100_000, b'x'*1000)
    with pytest.raises(DownloadError) as e: download_file(url, tmp_path/'a.tgz', show_progress=False)
    s.close()
    assert '\n' not in str(e.value)
    assert list(tmp_path.iterdir()) == []                      # neither a.tgz nor a.tgz.part

def test_known_checks_verified(www, tmp_path):
    "The default archive's size and checksum come from fastai's records; a file that does not match them is refused."
    from fastai.data.external import URLs
    from petbreeds.download import known_checks
    assert known_checks(URLs.PETS) == (811706944, 'e4db5c768afd933bb91f5f594d7417a4')
    _tar(www['dir']/'oxford-iiit-pet.tgz', _m(*OK_IMG))
    url = www['url']+'/oxford-iiit-pet.tgz'
    n = (www['dir']/'oxford-iiit-pet.tgz').stat().st_size
    with pytest.raises(DownloadError, match="fastai's record says 811,706,944"):
        download_file(url, tmp_path/'dl'/'a.tgz', checks=known_checks(URLs.PETS), show_progress=False)
    with pytest.raises(DownloadError, match='size or checksum differs'):
        download_file(url, tmp_path/'dl'/'a.tgz', checks=(n, '0'*32), show_progress=False)
    assert list((tmp_path/'dl').iterdir()) == []
