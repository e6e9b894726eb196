"""Bounded inputs (issue 22, items 6 and 9): model.json checked field by field before anything is built, weights that are
regular files as long as their safetensors header says, downloads with a deadline and a size cap, archives with caps on
what they extract to, a mirror announced as unverified, and every bad input one line (exit 2), fuzzed with hypothesis."""
import contextlib, functools, http.server, io, json, os, shutil, signal, socket, tarfile, tempfile, threading, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from hypothesis import given, settings, HealthCheck, strategies as st
from conftest import tiny_learner

import petbreeds.model_files as mf
from petbreeds.model_files import save_model, load_model_files, ModelFileError
from petbreeds.safety import PetbreedsError
from petbreeds.download import download_file, safe_extract, get_dataset, DownloadError, UnsafeArchive

@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A two-breed resnet18 (no pretrained weights) saved by `save_model`, and a folder of images of its breeds."
    from fastai.vision.all import FuncSplitter
    root = tmp_path_factory.mktemp('model')
    learn, src = tiny_learner(root, 3, FuncSplitter(lambda o: o.name.endswith('_0.jpg')))
    out = root/'run'; out.mkdir()
    save_model(learn, out, 'resnet18')
    meta = json.loads((out/'model.json').read_text())
    assert meta['vocab']==['Birman', 'pug']
    return dict(out=out, src=src, meta=meta, root=root)

def _folder(model, meta=None, text=None, weights=None)->Path:
    "A new model folder: `model`'s weights linked (or `weights` bytes), its model.json as `meta` or `text`."
    d = Path(tempfile.mkdtemp(dir=model['root']))
    if weights is None: os.link(model['out']/'model.safetensors', d/'model.safetensors')
    else: (d/'model.safetensors').write_bytes(weights)
    (d/'model.json').write_text(text if text is not None else json.dumps(meta if meta is not None else model['meta']))
    return d

def _one_line(msg:str, *names)->bool: return '\n' not in msg and all(str(n) in msg for n in names)

@contextlib.contextmanager
def _within(seconds:float):
    "Fail the test (rather than hang it) if the block takes longer than `seconds` (main thread only)."
    if threading.current_thread() is not threading.main_thread(): yield; return
    def boom(*a): raise TimeoutError(f'still running after {seconds} s')
    old = signal.signal(signal.SIGALRM, boom); signal.setitimer(signal.ITIMER_REAL, seconds)
    try: yield
    finally: signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, old)

@pytest.fixture
def no_build(monkeypatch):
    "Building the pipeline or the network fails the test: what is refused must be refused before anything is allocated."
    def boom(*a, **k): raise AssertionError('built a pipeline or a network for a model.json that should have been refused')
    monkeypatch.setattr(mf, '_dls_for', boom); monkeypatch.setattr(mf, 'pets_learner', boom)

# --- model.json, field by field ---
def test_vocab_string_refused(model, no_build):
    d = _folder(model, {**model['meta'], 'vocab': 'abc'})
    with pytest.raises(ModelFileError) as e: load_model_files(d)
    assert _one_line(str(e.value), d/'model.json', 'vocab', "'abc'"), str(e.value)

def test_huge_presize_refused_before_allocation(model, no_build):
    for k, v in [('presize', [30000, 30000]), ('size', 30000), ('presize', [64, 0])]:
        d = _folder(model, {**model['meta'], k: v})
        with pytest.raises(ModelFileError) as e: load_model_files(d)
        assert _one_line(str(e.value), d/'model.json', k, 'pixels'), str(e.value)

@pytest.mark.parametrize('field,value', [('arch', 5), ('arch', 'resnet9000'), ('vocab', ['pug', 'pug']), ('vocab', ['../../escaped']),
                                         ('vocab', ['Birman', 'pug', 'beagle']), ('weights', '../run/model.safetensors'),
                                         ('sha256', 'ABC'), ('min_scale', 'big'), ('mean', [1, 2]), ('head', {'lin_ftrs': [10**9]}),
                                         ('n_bytes', 12), ('few_shot', {'probs': True}), ('few_shot', 'yes')])
def test_each_field_one_line(model, no_build, field, value):
    d = _folder(model, {**model['meta'], field: value})
    with pytest.raises(ModelFileError) as e: load_model_files(d)
    msg = str(e.value)
    assert '\n' not in msg and str(d) in msg, msg
    assert field in msg or 'breeds' in msg, msg
    assert not (model['root']/'escaped_1.png').exists()

def test_model_json_size_and_depth_bounded(model, no_build):
    for text, says in [(' '*(2**20+1), 'allowed'), ('{"format": "petbreeds-model/1", "a": ' + '['*30 + ']'*30 + '}', 'deep'),
                       ('['*200_000, 'RecursionError'), ('{"format": "petbreeds-model/1", "n": ' + '9'*5000 + '}', 'ValueError')]:
        d = _folder(model, text=text)
        with pytest.raises(ModelFileError) as e: load_model_files(d)
        assert _one_line(str(e.value), d/'model.json', says), str(e.value)

# --- the weights file ---
def test_weights_must_be_a_regular_file(model, tmp_path, no_build):
    "A link to /dev/zero would be hashed for ever, a FIFO opened for ever: both refused at once."
    for make in (lambda w: w.symlink_to('/dev/zero'), os.mkfifo):
        d = Path(tempfile.mkdtemp(dir=tmp_path)); (d/'model.json').write_text(json.dumps(model['meta']))
        make(d/'model.safetensors')
        with _within(10), pytest.raises(ModelFileError) as e: load_model_files(d)
        assert _one_line(str(e.value), d/'model.safetensors', 'not a regular file'), str(e.value)

def _hashed(model, blob:bytes)->Path:
    "A folder whose model.json vouches (SHA-256, n_bytes) for the weights `blob`: only the file's form can be wrong."
    import hashlib
    return _folder(model, {**model['meta'], 'sha256': hashlib.sha256(blob).hexdigest(), 'n_bytes': len(blob)}, weights=blob)

def test_malformed_safetensors_header_one_line(model):
    blob = (model['out']/'model.safetensors').read_bytes()
    n = int.from_bytes(blob[:8], 'little')
    for bad in [b'\xff'*8 + blob[8:], blob[:8] + b'[' + blob[9:8+n] + blob[8+n:], blob[:8+n] + blob[8+n:-16],
                blob + b'\0'*16, blob[:6]]:
        d = _hashed(model, bad)
        with _within(20), pytest.raises(ModelFileError) as e: load_model_files(d)
        assert _one_line(str(e.value), d/'model.safetensors', 'safetensors'), str(e.value)

# --- fuzzing model.json: only ModelFileError, naming the file, nothing written ---
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=8)
_EDGES = st.sampled_from(['abc', '', '..', '../model.safetensors', '/dev/zero', 0, -1, 2049, 30000, [30000, 30000], [64], [64, 64, 3],
                          [], {}, ['pug'], ['Birman', 'pug', 'pug'], ['Birman', 'a/b'], 'resnet18', 'A'*64, True, 1e308, [0.5, 0.5, 0.5],
                          'efficientnet_lite2', {'flip': False, 'probs': True, 'strength': 10.0}, {'strength': None, 'folds': 4}])
_FIELDS = ['format', 'arch', 'vocab', 'presize', 'size', 'min_scale', 'mean', 'std', 'weights', 'sha256', 'n_bytes', 'head', 'few_shot', 'versions']

def _snapshot(d:Path)->dict: return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in d.iterdir()}

@settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_model_json(model, data):
    meta = dict(model['meta'])
    for _ in range(data.draw(st.integers(1, 3), 'edits')):
        k = data.draw(st.sampled_from(_FIELDS), 'field')
        if data.draw(st.integers(0, 9), 'how')==0: meta.pop(k, None)
        else: meta[k] = data.draw(_EDGES | _JSON, 'value')
    text = json.dumps(meta) if data.draw(st.integers(0, 9), 'raw')<9 else data.draw(st.text(st.characters(exclude_categories=('Cs',)), max_size=200), 'text')
    d, scratch = _folder(model, text=text), Path(tempfile.mkdtemp(dir=model['root']))
    before, old = _snapshot(d), tempfile.tempdir
    tempfile.tempdir = str(scratch)   # the one-pixel image load_model_files writes goes here, and must be gone afterwards
    try: learn = load_model_files(d)
    except ModelFileError as e: assert isinstance(e, PetbreedsError) and _one_line(str(e), d), str(e)
    else: assert list(learn.dls.vocab)==meta['vocab']
    finally: tempfile.tempdir = old
    assert _snapshot(d)==before and list(scratch.iterdir())==[] and not (model['root']/'escaped_1.png').exists()
    shutil.rmtree(d); scratch.rmdir()

# --- the command line ---
def test_cli_evaluate_bad_folder_exit_2_one_line(model, capsys, monkeypatch):
    from petbreeds.cli import main
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    for field, value in [('arch', 5), ('presize', 'abc'), ('vocab', ['Birman', 7])]:
        d = _folder(model, {**model['meta'], field: value})
        with pytest.raises(SystemExit) as e: main(['evaluate', str(d), str(model['src'])])
        err = capsys.readouterr().err
        assert e.value.code==2, (field, err)
        assert err.strip().count('\n')==0 and 'Traceback' not in err and str(d/'model.json') in err and field in err, err

# --- downloads ---
def _one_answer(head:bytes, body:bytes=b'', drip:float=0)->str:
    "The URL of a server on 127.0.0.1 that answers one request with `head` and `body` (a byte every `drip` seconds, if given)."
    s = socket.create_server(('127.0.0.1', 0))
    def serve():
        try:
            s.settimeout(30); c, _ = s.accept(); c.recv(65536); c.sendall(head)
            for i in range(len(body)) if drip else []: c.sendall(body[i:i+1]); time.sleep(drip)
            if not drip: c.sendall(body)
            c.close()
        except OSError: pass   # the client gave up
        finally: s.close()
    threading.Thread(target=serve, daemon=True).start()
    return f'http://127.0.0.1:{s.getsockname()[1]}/oxford-iiit-pet.tgz'

def _ok(n:int)->bytes: return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % n

def test_content_length_not_a_number(tmp_path):
    for v in (b'abc', b'-5', b'1e3'):
        url = _one_answer(b'HTTP/1.1 200 OK\r\nContent-Length: ' + v + b'\r\n\r\n', b'x'*20)
        with pytest.raises(DownloadError) as e: download_file(url, tmp_path/'a.tgz', show_progress=False)
        assert _one_line(str(e.value), url, 'Content-Length', repr(v.decode())), str(e.value)
    assert list(tmp_path.iterdir())==[]

def test_deadline_stops_a_dripping_server(tmp_path):
    "A byte every 50 ms never trips the 30 s read timeout; the deadline for the whole download stops it."
    url = _one_answer(_ok(10_000), b'x'*10_000, drip=0.05)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e: download_file(url, tmp_path/'a.tgz', deadline=1, show_progress=False)
    assert time.perf_counter()-t0 < 6
    assert _one_line(str(e.value), url, 'deadline of 1 s'), str(e.value)
    assert list(tmp_path.iterdir())==[]

def test_size_cap_announced_or_not(tmp_path):
    url = _one_answer(_ok(10**12))
    with pytest.raises(DownloadError) as e: download_file(url, tmp_path/'a.tgz', max_bytes=2**20, show_progress=False)
    assert _one_line(str(e.value), url, '1,000,000,000,000 bytes'), str(e.value)
    url = _one_answer(b'HTTP/1.0 200 OK\r\n\r\n', b'x'*(3*2**20))   # no Content-Length: counted as it comes
    with pytest.raises(DownloadError) as e: download_file(url, tmp_path/'a.tgz', max_bytes=2**20, show_progress=False)
    assert _one_line(str(e.value), url, 'more than the 1,048,576 bytes allowed'), str(e.value)
    assert list(tmp_path.iterdir())==[]
    import inspect
    p = inspect.signature(download_file).parameters
    assert p['deadline'].default >= 3600 and p['max_bytes'].default >= 2**30   # generous for the real 0.8 GB archive

def _tar(fn, *files):
    with tarfile.open(fn, 'w:gz') as t:
        for name, data in files:
            ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    return fn

def test_gzip_bomb_refused_nothing_left(tmp_path):
    bomb = _tar(tmp_path/'bomb.tgz', ('pets/images/Birman_1.jpg', b'jpeg'), ('pets/images/pug_1.jpg', b'\0'*(16*2**20)))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnsafeArchive) as e: safe_extract(bomb, tmp_path/'data', max_member=2**20)
    assert _one_line(str(e.value), 'bomb.tgz', 'pets/images/pug_1.jpg', '16,777,216 bytes'), str(e.value)
    many = _tar(tmp_path/'many.tgz', *[(f'pets/images/pug_{i}.jpg', b'\0'*2**19) for i in range(8)])
    with pytest.raises(UnsafeArchive) as e: safe_extract(many, tmp_path/'data', max_total=2**21)
    assert _one_line(str(e.value), 'many.tgz', '2,097,152 bytes allowed'), str(e.value)
    assert [p for p in (tmp_path/'data').rglob('*')]==[]            # no partial folder, no file
    import inspect
    p = inspect.signature(safe_extract).parameters
    assert p['max_member'].default >= 2**28 and p['max_total'].default >= 2**31

@pytest.fixture
def www(tmp_path):
    served = tmp_path/'www'; served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield dict(dir=served, url=f'http://127.0.0.1:{srv.server_address[1]}')
    srv.shutdown()

def test_mirror_without_checksum_announced_unverified(www, tmp_path, capsys, monkeypatch):
    from petbreeds.data import download_pets
    import petbreeds.download as dl
    arch = _tar(www['dir']/'oxford-iiit-pet.tgz', ('oxford-iiit-pet/images/Birman_1.jpg', b'jpeg'))
    url = www['url']+'/oxford-iiit-pet.tgz'
    monkeypatch.setenv('PETBREEDS_PETS_URL', url)
    assert (download_pets(dest=tmp_path/'a', show_progress=False)/'images').is_dir()
    lines = [l for l in capsys.readouterr().out.splitlines() if 'unverified' in l]
    assert len(lines)==1 and url in lines[0], lines
    download_pets(dest=tmp_path/'a', show_progress=False)              # cached: nothing downloaded, nothing said
    assert 'unverified' not in capsys.readouterr().out
    from fastdownload import path_stats
    monkeypatch.setattr(dl, 'known_checks', lambda u: path_stats(arch))   # a URL fastai has a record of: checked, not announced
    get_dataset(url, tmp_path/'b', tmp_path/'b'/'archive', show_progress=False)
    assert 'unverified' not in capsys.readouterr().out
