"""A run folder is one run (issue 22, items 2 and 10): `petbreeds train --out DIR` writes its files beside DIR and renames
them into place when complete, replaces a previous run whole and nothing else, refuses empty names, and Ctrl-C (exit 130)
leaves the old run as it was and nothing that looks finished."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from conftest import offline_env, ROOT

RUN = ['model.json', 'model.pkl', 'model.safetensors', 'results.json']

@pytest.fixture(scope='module')
def pics(tmp_path_factory):
    "Eight small photos of two breeds: with `--data` on a CPU (the few-shot ncm recipe) a run takes a second or two."
    d = tmp_path_factory.mktemp('pics')
    rng = np.random.default_rng(0)
    for b,c in (('Birman', 40), ('pug', 200)):
        for i in range(4): Image.fromarray((rng.random((40, 40, 3))*60+c).astype(np.uint8)).save(d/f'{b}_{i}.jpg')
    return d

@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline'); monkeypatch.delenv('PETBREEDS_DATA', raising=False)

def _main(*argv):
    from petbreeds.cli import main
    try: return main([str(a) for a in argv])
    except SystemExit as e: return e.code

def _train(pics, out, *more): return _main('train', '--data', pics, '--out', out, '--threads', '1', *more)
def _files(d): return {f.name: f.read_bytes() for f in sorted(Path(d).iterdir())}
def _beside(d): return sorted(o.name for o in Path(d).parent.iterdir() if o.name!=Path(d).name)   # staging left behind?
def _one_line(err): return err.strip().count('\n')==0 and 'Traceback' not in err

def _old_run(out:Path, leftover:bool=False):
    "A previous run's files in `out` (as an older version, killed while writing `model.pkl`, may have left them)."
    from petbreeds.model_files import MODEL_FORMAT
    out.mkdir(parents=True)
    (out/'model.json').write_text(json.dumps(dict(format=MODEL_FORMAT, arch='resnet18', sha256='0'*64)))
    (out/'results.json').write_text(json.dumps(dict(profile='offline', error_rate=0.5)))
    if leftover: (out/'.model.pkl.4242.k2j_x9ab.tmp.pkl').write_bytes(b'half a pickle')
    return _files(out)

def test_a_previous_run_is_replaced_whole(pics, tmp_path, offline, capsys):
    out = tmp_path/'runs'/'run'
    _old_run(out, leftover=True)
    assert _train(pics, out, '--seed', '2')==0, capsys.readouterr()
    assert sorted(os.listdir(out))==RUN                                      # the new run alone: no leftover of the old
    assert json.loads((out/'results.json').read_text())['args']['seed']==2 and _beside(out)==[]
    from petbreeds.model_files import load_model
    assert len(load_model(out).dls.vocab)==2                                 # model.json and its weights from one run

def test_a_failed_save_leaves_the_old_run_whole(pics, tmp_path, offline, capsys, monkeypatch):
    "Disk full (the CLI: exit 1) or Ctrl-C (the library) after model.json is written: the old run, byte for byte, and nothing beside."
    out = tmp_path/'runs'/'run'
    assert _train(pics, out, '--seed', '1')==0
    old = _files(out); capsys.readouterr()
    from fastai.learner import Learner
    def full(self, fname, **kw): Path(fname).write_bytes(b'half'); raise OSError(28, 'No space left on device')
    monkeypatch.setattr(Learner, 'export', full)
    assert _train(pics, out, '--seed', '2')==1
    err = capsys.readouterr().err
    assert _one_line(err) and 'No space left on device' in err, err
    assert _files(out)==old and _beside(out)==[]
    def interrupted(self, fname, **kw): raise KeyboardInterrupt
    monkeypatch.setattr(Learner, 'export', interrupted)
    from petbreeds.recipes import training_profile, train_run
    with pytest.raises(KeyboardInterrupt): train_run(training_profile('offline', data=pics, verbose=False), out=out, seed=3)
    assert _files(out)==old and _beside(out)==[]

def test_a_folder_that_is_not_a_run_is_refused_and_kept(pics, tmp_path, offline, capsys):
    mine = tmp_path/'mine'; (mine/'photos').mkdir(parents=True)
    (mine/'notes.txt').write_text('my notes'); (mine/'results.json').write_text('{"total": 3}'); (mine/'photos'/'a.jpg').write_text('x')
    before = sorted(str(p.relative_to(mine)) for p in mine.rglob('*'))
    assert _train(pics, mine)==2
    cap = capsys.readouterr()
    assert _one_line(cap.err) and "'mine' holds files petbreeds train did not write (notes.txt, photos" in cap.err.replace(str(tmp_path)+'/', ''), cap.err
    assert '8 images in' not in cap.out                                      # refused before any work
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob('*'))==before and (mine/'notes.txt').read_text()=='my notes'
    assert _beside(mine)==[]

def test_empty_out_and_data_names_are_refused(tmp_path, offline, capsys, monkeypatch):
    "`--out ''` is not the current folder and `--data ''` not the synthetic pets: one line, exit 2, nothing written or trained."
    import petbreeds.recipes
    from petbreeds.model_files import run_folder, ModelFileError
    ran = []
    monkeypatch.setattr(petbreeds.recipes, 'train_run', lambda *a, **kw: ran.append(kw))
    monkeypatch.chdir(tmp_path)
    for argv in (['--out', ''], ['--data', ''], ['--data', '', '--out', tmp_path/'run']):
        assert _main('train', *argv)==2, argv
        err = capsys.readouterr().err
        assert _one_line(err) and f"argument {argv[0]}: '' names no folder" in err, err
    assert ran==[] and os.listdir(tmp_path)==[]
    with pytest.raises(ModelFileError, match="--out '' names no folder"): run_folder('')

def test_folder_replaced_whole_without_an_atomic_swap(tmp_path, monkeypatch):
    "Where the two folders cannot swap names in one step, the old one steps aside, the new one goes in, the old one goes."
    import petbreeds.safety as safety
    monkeypatch.setattr(safety, '_exchange', lambda a, b: False)
    (tmp_path/'run').mkdir(); (tmp_path/'run'/'results.json').write_text('old')
    with safety.atomic_path(tmp_path/'run', folder=True, replaces=lambda f: True) as tmp: (tmp/'model.json').write_text('new')
    assert os.listdir(tmp_path/'run')==['model.json'] and os.listdir(tmp_path)==['run']

def test_a_mount_point_is_refused_before_any_work(tmp_path):
    "A run is renamed into place, and a mount point cannot be: one line naming it, not a failure after training."
    from petbreeds.model_files import run_folder, ModelFileError
    d = tmp_path/'mnt'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'cannot mount a tmpfs here ({r.stderr.strip()[:80] or "not root"})')
    try:
        with pytest.raises(ModelFileError, match='is a mount point'): run_folder(d)
        assert os.listdir(d)==[]
    finally: subprocess.run(['umount', '-l', str(d)])

def _start(pics, out):
    "`petbreeds train` in a process of its own, long enough to be interrupted: two hundred epochs on eight small images."
    return subprocess.Popen([sys.executable, '-m', 'petbreeds.cli', 'train', '--data', str(pics), '--recipe', 'fine_tune', '--epochs', '200',
                             '--freeze-epochs', '0', '--size', '32', '--presize', '32', '--threads', '1', '--out', str(out)],
                            cwd=ROOT, env=offline_env(PYTHONUNBUFFERED=1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def _interrupt(p)->str:
    "Wait for training to start, send Ctrl-C (SIGINT), and return what the process printed."
    lines = []
    for line in p.stdout:
        lines.append(line)
        if re.match(r'\d+ images in ', line): break                          # data loaded, training starts
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    try: rest, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired: p.kill(); pytest.fail('Ctrl-C did not stop the run within 30 s: ' + ''.join(lines))
    return ''.join(lines) + rest

@pytest.mark.slow   # two real processes, each importing fastai: about 20 s
def test_ctrl_c_during_train_leaves_no_run_that_looks_finished(pics, tmp_path):
    "Two runs interrupted at once: into a new folder (none appears) and onto a previous run (kept as it was); exit 130 each."
    new, prev = tmp_path/'a'/'run', tmp_path/'b'/'run'
    new.parent.mkdir(); old = _old_run(prev)
    procs = [_start(pics, new), _start(pics, prev)]
    outs = [_interrupt(p) for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode==130 and 'petbreeds: interrupted' in out and 'Traceback' not in out, out[-3000:]
        assert 'error rate:' not in out, out[-3000:]                           # stopped during training, not after it
    assert not new.exists() and os.listdir(new.parent)==[]                   # no run folder, empty or half-written
    assert _files(prev)==old and _beside(prev)==[]                           # the previous run, whole; no staging left
