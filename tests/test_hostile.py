"""Hostile inputs and the outside world, beyond downloads (tests/test_download.py): model files that cannot run code,
checksums, pickles only when trusted, output folders that are read-only, full, files, or shared by two runs started
together, 16-bit images, and the command line's errors (one line; exit 2 for the user's mistakes, 1 for the machine's)."""
import errno, json, multiprocessing, os, shutil, subprocess, sys, tempfile, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from conftest import offline_env, run, ROOT, tiny_learner

from petbreeds.model_files import (run_folder, check_writable, atomic_write, atomic_path, save_model, load_model,
                                   load_model_files, ModelFileError)
from petbreeds.data import PetImage, get_pet_files, check_split, DataError, PETS_PAT

@pytest.fixture
def mount(tmp_path):
    "`mount(size, ro)`: a tiny tmpfs (root only), unmounted afterwards; the test is skipped where it can't be made."
    made = []
    def _m(size='64k', ro=False):
        d = tmp_path/f'mnt{len(made)}'; d.mkdir()
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}' + (',ro' if ro else ''), 'tmpfs', str(d)], capture_output=True, text=True)
        if r.returncode: pytest.skip(f'cannot mount a tmpfs here ({r.stderr.strip()[:80] or "not root"}): read-only/full folders untested')
        made.append(d)
        return d
    yield _m
    for d in made: subprocess.run(['umount', '-l', str(d)])

def _fill(d):
    "Fill the file system holding `d`."
    fd = os.open(d/'filler', os.O_WRONLY|os.O_CREAT)
    try:
        while True: os.write(fd, b'\0'*4096)
    except OSError as e: assert e.errno==errno.ENOSPC
    finally: os.close(fd)

# --- output folders ---
def test_read_only_out_is_the_users_mistake(mount):
    ro = mount(ro=True)
    with pytest.raises(ModelFileError, match='read-only file system'): run_folder(ro/'run1')
    with pytest.raises(ModelFileError, match='read-only file system'): run_folder(None, root=ro)

def test_full_disk_is_the_machines_and_leaves_old_files(mount):
    full = mount('64k')
    atomic_write(full/'results.json', '{"error_rate": 0.1}')
    _fill(full)
    with pytest.raises(OSError) as e: atomic_write(full/'results.json', 'x'*100_000)
    assert e.value.errno==errno.ENOSPC and not isinstance(e.value, ModelFileError)
    assert (full/'results.json').read_text()=='{"error_rate": 0.1}'          # the old result, whole
    assert sorted(os.listdir(full))==['filler', 'results.json']               # no temporary file left
    (full/'filler').unlink()
    with pytest.raises(OSError, match='MiB free'): check_writable(full, need_bytes=10*2**20)

def test_out_naming_a_file(tmp_path):
    (tmp_path/'f').write_text('x')
    with pytest.raises(ModelFileError, match='is a file, not a folder'): run_folder(tmp_path/'f')

def _make(args):
    root, barrier = args
    return str(run_folder(None, root=root))

def test_runs_started_together_get_their_own_folders(tmp_path):
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(8) as pool: got = pool.map(_make, [(tmp_path/'runs', None)]*16)
    assert len(set(got))==16 and all(Path(o).is_dir() for o in got)

def test_interrupted_write_leaves_old_file(tmp_path):
    atomic_write(tmp_path/'model.json', 'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path/'model.json') as tmp:
            tmp.write_text('half'); raise KeyboardInterrupt
    assert (tmp_path/'model.json').read_text()=='old' and os.listdir(tmp_path)==['model.json']

# --- model files ---
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A two-breed resnet18 (no pretrained weights), saved both ways."
    from fastai.vision.all import RandomSplitter
    root = tmp_path_factory.mktemp('tiny')
    learn, src = tiny_learner(root, 4, RandomSplitter(0.5, seed=0))
    out = root/'run'; out.mkdir()
    save_model(learn, out, 'resnet18'); learn.export(out/'model.pkl')
    return dict(src=src, out=out, root=root)

def test_flipped_bytes_refused(tiny, tmp_path):
    for f in ('model.json', 'model.safetensors'): shutil.copy(tiny['out']/f, tmp_path/f)
    b = bytearray((tmp_path/'model.safetensors').read_bytes()); mid = len(b)//2
    b[mid:mid+64] = bytes(x^0xFF for x in b[mid:mid+64]); (tmp_path/'model.safetensors').write_bytes(bytes(b))
    with pytest.raises(ModelFileError) as e: load_model(tmp_path)
    assert 'does not match the SHA-256' in str(e.value) and '\n' not in str(e.value)

def _evil_pickle(fn, marker, stealthy_model=None):
    "A `model.pkl` that writes `marker` when unpickled (and, stealthy, then returns a working model)."
    class Evil:
        def __reduce__(self): return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))
    torch.save({'payload': Evil()} if stealthy_model is None else [Evil(), stealthy_model], fn)
    return fn

def test_crafted_pickle_refused_without_flag(tmp_path):
    marker = tmp_path/'marker'
    fn = _evil_pickle(tmp_path/'model.pkl', marker)
    with pytest.raises(ModelFileError, match='--trust-pickle'): load_model(fn)
    with pytest.raises(ModelFileError, match='--trust-pickle'): load_model(tmp_path)      # a folder with only a pickle
    assert not marker.exists()
    with warnings.catch_warnings(record=True) as w:                                      # trusted: it runs, fastai warns
        warnings.simplefilter('always')
        with pytest.raises(ModelFileError, match='not a model exported'): load_model(fn, trust_pickle=True)
    assert marker.exists() and any('insecure pickle' in str(o.message) for o in w)

# --- data ---
def test_16bit_png_trains_as_what_it_shows(tmp_path):
    "Through the pets DataBlock (which uses `PetImage`), a 16-bit gray ramp stays a ramp, not a white square."
    from petbreeds.presizing import pets_block
    for b in ('Birman', 'pug'):
        for i in range(3): Image.fromarray(np.linspace(0, 65535, 64*64).reshape(64, 64).astype(np.uint16)).save(tmp_path/f'{b}_{i}.png')
    assert Image.open(tmp_path/'pug_0.png').mode=='I;16'
    blk = pets_block(presize=64, size=64, fold=True)
    x = blk.datasets(tmp_path).train[0][0]
    assert 100 < np.asarray(x).mean() < 155, np.asarray(x).mean()

def test_names_and_extensions(tmp_path, capsys):
    img = Image.new('RGB', (32, 32), (90, 120, 30))
    for n in ('Birman_1.JPG', 'Birman_2.jpeg', 'pug_1.png', 'pug_2.Jpg', 'my pug_3.jpg', 'Bírman_4.jpg', 'pug-5.jpg'): img.save(tmp_path/n, format='PNG' if n.endswith('png') else 'JPEG')
    files = get_pet_files(tmp_path)
    assert sorted(f.name for f in files)==['Birman_1.JPG', 'Birman_2.jpeg', 'pug_1.png', 'pug_2.Jpg']
    out = capsys.readouterr().out
    assert 'Skipped 3 of 7' in out and "my pug_3.jpg (name not Breed_123.jpg)" in out

def test_split_checked_before_training():
    fs = ['Birman_1.jpg', 'Birman_2.jpg', 'pug_1.jpg']
    with pytest.raises(DataError, match='only one breed'): check_split(fs[:2], lambda o: ([0], [1]))
    with pytest.raises(DataError, match='validation set is empty'): check_split(fs, lambda o: ([0, 1, 2], []))
    with pytest.raises(DataError, match='no training images for pug'): check_split(fs, lambda o: ([0, 1], [2]))

# --- the command line: one line, exit 2 for the user's mistakes, 1 for the machine's ---
def _main(*argv, capsys=None):
    from petbreeds.cli import main
    try: code = main([str(a) for a in argv])
    except SystemExit as e: code = e.code
    return code

def _one_line(err): return err.strip().count('\n')==0 and 'Traceback' not in err

def test_cli_refuses_crafted_pickle(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    marker = tmp_path/'marker'; img = tmp_path/'pug_1.jpg'; Image.new('RGB', (32, 32)).save(img)
    evil = _evil_pickle(tmp_path/'model.pkl', marker)
    for cmd in (['predict', evil, img], ['evaluate', evil, tmp_path], ['predict', tmp_path, img]):
        assert _main(*cmd)==2
        err = capsys.readouterr().err
        assert _one_line(err) and '--trust-pickle' in err, err
    assert not marker.exists()
    with pytest.warns(UserWarning, match='insecure pickle'):                        # fastai's warning, shown
        assert _main('predict', evil, img, '--trust-pickle')==2 and marker.exists()  # trusted: loaded (and it ran)

def test_cli_refuses_flipped_weights(tiny, tmp_path, capsys):
    for f in ('model.json', 'model.safetensors'): shutil.copy(tiny['out']/f, tmp_path/f)
    b = bytearray((tmp_path/'model.safetensors').read_bytes()); b[-200:-136] = bytes(x^1 for x in b[-200:-136])
    (tmp_path/'model.safetensors').write_bytes(bytes(b))
    assert _main('predict', tmp_path, tiny['src']/'pug_0.jpg')==2
    err = capsys.readouterr().err
    assert _one_line(err) and 'does not match the SHA-256' in err, err

def test_cli_safe_model_predicts_like_the_pickle(tiny, capsys):
    img = tiny['src']/'pug_0.jpg'
    assert _main('predict', tiny['out'], img)==0
    safe = capsys.readouterr().out
    assert _main('predict', tiny['out']/'model.pkl', img, '--trust-pickle')==0
    assert capsys.readouterr().out==safe

def test_cli_evaluate_json_stdout_is_only_json(tiny, capsys):
    assert _main('evaluate', tiny['out'], tiny['src'], '--json', '-')==0
    cap = capsys.readouterr()
    assert json.loads(cap.out)['n_images']==8            # the whole of stdout parses
    assert 'error rate:' in cap.err and 'per-breed accuracy' in cap.err

def test_cli_bad_values(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    (tmp_path/'afile').write_text('x')
    for argv, msg in [(['train', '--min-scale', '5'], "'5' must be in (0, 1]"), (['train', '--min-scale', '0'], 'must be a positive number'),
                      (['train', '--out', tmp_path/'afile'], 'is a file, not a folder'),
                      (['evaluate', tmp_path, tmp_path, '--json', tmp_path/'no'/'ev.json'], 'its folder does not exist')]:
        assert _main(*argv)==2, argv
        err = capsys.readouterr().err
        assert _one_line(err) and msg in err, (msg, err)

def test_cli_read_only_and_full_out(mount, capsys, monkeypatch):
    "Before any work: a read-only --out is the user's to fix (2), a full disk the machine's (1); one line each."
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    ro = mount(ro=True)
    assert _main('train', '--out', ro/'run')==2
    cap = capsys.readouterr()
    assert _one_line(cap.err) and 'read-only file system' in cap.err and 'images in' not in cap.out
    full = mount('64k'); _fill(full)
    assert _main('train', '--out', full)==1
    cap = capsys.readouterr()
    assert _one_line(cap.err) and 'No space left on device' in cap.err and 'images in' not in cap.out, cap

def test_cli_machine_errors_exit_1(monkeypatch, capsys):
    import petbreeds.cli as cli
    for e in (RuntimeError('CUDA out of memory'), OSError(5, 'Input/output error'), TypeError('a bug')):
        def boom(args, e=e): raise e
        monkeypatch.setitem(cli._COMMANDS, 'quiz', boom)
        assert _main('quiz')==1
        err = capsys.readouterr().err
        assert _one_line(err) and err.startswith(f'petbreeds quiz: error: {type(e).__name__}: '), err

def test_cli_one_breed_stops_before_training(tmp_path, capsys, monkeypatch):
    for i in range(6): Image.new('RGB', (40, 40), (10*i, 50, 90)).save(tmp_path/f'pug_{i}.jpg')
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    assert _main('train', '--data', tmp_path, '--out', tmp_path/'run', '--no-pretrained', '--threads', '1')==2
    cap = capsys.readouterr()
    assert _one_line(cap.err) and 'only one breed (pug)' in cap.err, cap.err

def test_ctrl_c_stops_at_once_and_leaves_nothing_complete(tmp_path):
    "SIGINT during training: exit 130 within seconds, no results.json or model.json (nothing that looks finished)."
    import signal, time
    out = tmp_path/'run'
    env = offline_env(PYTHONUNBUFFERED=1)
    p = subprocess.Popen([sys.executable, '-m', 'petbreeds.cli', 'train', '--profile', 'offline', '--per-breed', '6', '--epochs', '3',
                          '--freeze-epochs', '1', '--threads', '1', '--out', str(out)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if ' images in ' in line: break                          # data loaded, training starts
    time.sleep(3)
    t0 = time.perf_counter(); p.send_signal(signal.SIGINT)
    try: rest, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired: p.kill(); pytest.fail('Ctrl-C did not stop the run within 30 s: ' + ''.join(lines))
    took = time.perf_counter()-t0
    assert p.returncode==130, ''.join(lines)+rest
    assert 'petbreeds: interrupted' in rest and 'Traceback' not in rest, rest
    assert not (out/'results.json').exists() and not (out/'model.json').exists()
    print(f'stopped {took:.1f} s after SIGINT')

# --- issue 22: the outside world, second round ---
def test_dotdot_pets_url_deletes_nothing(tmp_path, monkeypatch):
    "`PETBREEDS_PETS_URL=.../pets/..` names the archive `..`: refused in one line before anything is removed or fetched."
    from petbreeds.data import download_pets
    home = tmp_path/'home'; (home/'data').mkdir(parents=True); (home/'keep.txt').write_text('mine')
    for tail in ('..', '%2e%2e', '.', '', '...tgz', 'a%2Fb'):
        monkeypatch.setenv('PETBREEDS_PETS_URL', f'http://127.0.0.1:9/mirror/pets/{tail}')
        with pytest.raises(DataError) as e: download_pets(dest=home/'data', show_progress=False)   # DataError: exit 2
        assert 'is not a plain file name' in str(e.value) and '\n' not in str(e.value), str(e.value)
        assert (home/'keep.txt').read_text()=='mine' and (home/'data').is_dir()

def test_a_folder_the_program_did_not_make_is_left_alone(tmp_path):
    "An `oxford-iiit-pet` folder without `images/` that petbreeds did not extract is kept, and nothing is downloaded."
    from petbreeds.data import download_pets
    theirs = tmp_path/'data'/'oxford-iiit-pet'; theirs.mkdir(parents=True); (theirs/'notes.txt').write_text('mine')
    with pytest.raises(DataError, match='petbreeds did not make it'):
        download_pets('http://127.0.0.1:9/oxford-iiit-pet.tgz', tmp_path/'data', show_progress=False)
    assert (theirs/'notes.txt').read_text()=='mine'

def test_synthetic_pets_replace_only_their_own_folders(tmp_path):
    "`make_synthetic_pets(dest=...)` never removes a folder it did not draw, nor a look-alike of its temporary folders."
    from petbreeds.synthetic_set import make_synthetic_pets
    mine = tmp_path/'photos'; mine.mkdir(); (mine/'holiday.jpg').write_bytes(b'jpeg')
    lookalike = tmp_path/'.tmp-photos-album'; lookalike.mkdir(); (lookalike/'x.txt').write_text('mine')
    with pytest.raises(DataError, match='not a set of synthetic pets'): make_synthetic_pets(1, dest=mine, verbose=False)
    assert (mine/'holiday.jpg').read_bytes()==b'jpeg' and (lookalike/'x.txt').exists()
    assert sorted(o.name for o in tmp_path.iterdir())==['.tmp-photos-album', 'photos']   # no temporary folder left
    drawn = make_synthetic_pets(1, dest=tmp_path/'synth', verbose=False).parent
    (drawn/'images'/'Birman_1.jpg').unlink()                                               # incomplete: drawn again
    assert make_synthetic_pets(1, dest=drawn, verbose=False)==drawn/'images' and (drawn/'images'/'Birman_1.jpg').exists()

def test_cli_json_through_a_symlink_and_into_a_pipe(tiny, tmp_path, capsys):
    "`evaluate --json` keeps a symbolic link (its target gets the JSON) and writes a pipe in place, not replaced by a file."
    os.symlink(tmp_path/'target.json', tmp_path/'out.json')
    assert _main('evaluate', tiny['out'], tiny['src'], '--json', tmp_path/'out.json')==0
    assert (tmp_path/'out.json').is_symlink() and json.loads((tmp_path/'target.json').read_text())['n_images']==8
    r, w = os.pipe()
    try: assert _main('evaluate', tiny['out'], tiny['src'], '--json', f'/proc/self/fd/{w}')==0
    finally: os.close(w)
    with os.fdopen(r) as f: assert json.loads(f.read())['n_images']==8
    assert 'error rate:' in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path))==['out.json', 'target.json']                     # no temporary file left

def _sideways(src, dst, orientation=6, **save):
    "`src` stored turned, as a phone stores a portrait photo, and tagged so that a correct reader shows it upright."
    exif = Image.Exif(); exif[0x0112] = orientation
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    Image.open(src).convert('RGB').transpose(turn).save(dst, exif=exif, **save)
    return dst

@pytest.fixture
def photo():
    from conftest import SAMPLE
    if not SAMPLE.is_dir(): pytest.skip(f'no real photo sample at {SAMPLE}')
    return sorted(SAMPLE.glob('*.jpg'))[0]     # test data only: read here, never copied into the repository

def test_exif_orientation_read_upright(photo, tmp_path):
    "A real photo stored sideways with its EXIF tag is read upright: the same pixels losslessly, within JPEG's error else."
    up = np.asarray(Image.open(photo).convert('RGB'))
    assert up.shape[0]!=up.shape[1]                                           # not square: a wrong turn shows in the shape
    for o in (6, 8):
        got = np.asarray(PetImage.create(_sideways(photo, tmp_path/f'Birman_{o}.png', o)))
        assert got.shape==up.shape and (got==up).all()
        got = np.asarray(PetImage.create(_sideways(photo, tmp_path/f'Birman_{o}.jpg', o, quality=95)))
        assert got.shape==up.shape and np.abs(got.astype(int)-up).mean() < 3

def test_exif_orientation_in_training_and_prediction(photo, tiny, tmp_path):
    "The pets DataBlock's opener (training) and a loaded model's test_dl (evaluate, predict) both see the photo upright."
    from petbreeds.presizing import PetImageBlock
    Image.open(photo).convert('RGB').save(tmp_path/'pug_1.png')
    side = _sideways(photo, tmp_path/'pug_2.png')
    open_item = PetImageBlock(draft=64).type_tfms[0]
    assert (np.asarray(open_item(side))==np.asarray(open_item(tmp_path/'pug_1.png'))).all()
    x = load_model(tiny['out']).dls.test_dl([tmp_path/'pug_1.png', side]).one_batch()[0]
    assert torch.equal(x[0], x[1])

ODD = 'a\nx.jpg: pug 1.000\x1b[31m.jpg'     # a newline that forges an output line, and an escape that colours the terminal

def test_cli_prints_names_safely(tiny, tmp_path, capsys, monkeypatch):
    "A file name holding a newline and a terminal escape is printed escaped, on its own line, by predict and in skip reports."
    shutil.copy(tiny['src']/'pug_0.jpg', tmp_path/ODD); (tmp_path/'b\x1b[2J.jpg').write_text('not a picture')
    assert _main('predict', tiny['out'], tmp_path/ODD, tmp_path/'b\x1b[2J.jpg')==1
    cap = capsys.readouterr()
    assert cap.out.count('\n')==1 and cap.out.startswith(f'{tmp_path}/a\\nx.jpg: pug 1.000\\x1b[31m.jpg: '), cap.out
    assert cap.err==f'petbreeds predict: {tmp_path}/b\\x1b[2J.jpg: not an image\n', cap.err
    for f in tiny['src'].iterdir(): shutil.copy(f, tmp_path/f.name)
    get_pet_files(tmp_path)
    out = capsys.readouterr().out
    assert out.count('\n')==1 and 'a\\nx.jpg: pug 1.000\\x1b[31m.jpg (name not Breed_123.jpg)' in out, out
    import petbreeds.cli as cli
    monkeypatch.setitem(cli._COMMANDS, 'quiz', lambda args: (_ for _ in ()).throw(DataError(f'bad file {ODD}')))
    assert _main('quiz')==2
    err = capsys.readouterr().err
    assert '\x1b' not in err and _one_line(err) and 'x.jpg: pug 1.000\\x1b[31m.jpg' in err, err
