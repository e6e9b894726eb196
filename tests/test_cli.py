"""The `petbreeds` command, end to end in real processes: `train` in the offline profile (one process, and two
data-parallel processes under torchrun with gloo), `evaluate`, `predict` with a bad file, and one-line errors
with exit code 2 for bad options."""
import json, os, re, shutil, sys
from pathlib import Path
import pytest
from conftest import ROOT, SAMPLE, offline_env, run, run_python

PETBREEDS = ['-m', 'petbreeds.cli']   # `python -m petbreeds.cli`, run by `run_python`
# tiny settings: 6 synthetic images per breed, one frozen and one unfrozen epoch, one thread per process
TINY = ['--profile', 'offline', '--per-breed', '6', '--epochs', '1', '--freeze-epochs', '1', '--threads', '1']

def _error_rate(out, rank=None):
    "The error rate a run printed (`rank`: the line of that process). Regex, not lines: under torchrun two processes share one pipe."
    pat = r'^error rate: ([0-9.]+)' if rank is None else rf'rank {rank}/\d+: error rate ([0-9.]+)'
    m = re.search(pat, out, re.M)
    assert m, out[-3000:]
    return float(m.group(1))

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "One single-process offline training run: (CompletedProcess, output folder)."
    out = tmp_path_factory.mktemp('run')/'single'
    r = run_python(PETBREEDS + ['train', *TINY, '--out', str(out)])
    assert r.returncode==0, r.out[-4000:]
    return r, out

@pytest.fixture(scope='module')
def synth():
    from petbreeds.synthetic_set import make_synthetic_pets
    return make_synthetic_pets(per_breed=12)

def test_train_offline(trained):
    r, out = trained
    assert 'offline: asked for — using synthetic pets (6 per breed) and EfficientNet-Lite0' in r.stdout
    assert '222 images' in r.stdout and 'per-breed:1' in r.stdout
    assert 'epoch' in r.stdout and 'error_rate' in r.stdout          # fastai's results table
    for s in ('most confused:', 'per epoch', 'wrote'): assert s in r.stdout
    res = json.loads((out/'results.json').read_text())
    for k in ('profile', 'arch', 'data', 'n_images', 'epochs', 'error_rate', 'seconds', 'args'): assert k in res
    assert (res['profile'], res['arch'], res['data'], res['n_images'], res['n_valid']) == ('offline', 'efficientnet_lite0', 'synthetic', 222, 37)
    assert abs(res['error_rate'] - _error_rate(r.stdout)) < 1e-4
    assert len(res['seconds_per_epoch']) == 2
    assert (out/'model.pkl').stat().st_size > 1_000_000 and (out/'model.safetensors').stat().st_size > 1_000_000

@pytest.mark.slow   # two training processes under torchrun
def test_train_distributed_gloo(trained, tmp_path):
    "Two CPU processes under torchrun: both train, only rank 0 writes, the error rate is in line with one process."
    r1, _ = trained
    out = tmp_path/'ddp'
    r = run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
             '-m', 'petbreeds.cli', 'train', *TINY, '--out', str(out)], timeout=900)
    assert r.returncode==0, r.out[-4000:]
    assert '2 processes' in r.stdout and '(8 per process)' in r.stdout
    assert r.stdout.count('wrote ') == 1                      # only rank 0 writes
    assert r.stdout.count('offline: asked for') == 1          # and announces the profile
    err0 = _error_rate(r.stdout)
    assert r.stdout.count('rank 1/2: error rate') == 1, r.stdout[-3000:]   # rank 1 trained too
    assert abs(_error_rate(r.stdout, rank=1) - err0) < 1e-6    # metrics are gathered: both ranks agree
    res = json.loads((out/'results.json').read_text())
    assert res['processes'] == 2 and (out/'model.pkl').exists()
    assert sorted(p.name for p in out.iterdir()) == ['model.json', 'model.pkl', 'model.safetensors', 'results.json']
    assert abs(err0 - _error_rate(r1.stdout)) <= 0.15, (err0, _error_rate(r1.stdout))
    assert 'Traceback' not in r.out

def test_evaluate(trained, synth, tmp_path):
    _, model = trained
    d = tmp_path/'imgs'; d.mkdir()
    for f in sorted(synth.glob('*_1.jpg')): shutil.copy(f, d)
    (d/'notes.txt').write_text('not an image')
    r = run_python(PETBREEDS + ['evaluate', str(model), str(d), '--json', str(tmp_path/'ev.json')])
    assert r.returncode==0, r.out[-3000:]
    assert 'Skipped 1 of 38 files' in r.out and 'notes.txt (not an image file)' in r.out
    assert 'error rate:' in r.stdout and 'per-breed accuracy:' in r.stdout and 'most confused:' in r.stdout
    ev = json.loads((tmp_path/'ev.json').read_text())
    assert ev['n_images'] == 37 and len(ev['per_breed']) == 37
    assert abs(ev['error_rate'] - ev['n_wrong']/37) < 1e-6

def test_predict_with_a_bad_file(trained, synth, tmp_path):
    _, model = trained
    bad = tmp_path/'broken.jpg'; bad.write_bytes(b'\xff\xd8\xff\xe0 truncated')
    r = run_python(PETBREEDS + ['predict', str(model), str(synth/'pug_2.jpg'), str(bad), str(synth/'Birman_2.jpg'), '--top-k', '2'])
    assert r.returncode == 1, r.out[-3000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'petbreeds predict: {bad}: '), r.stderr
    lines = [l for l in r.stdout.splitlines() if l.endswith(tuple('0123456789'))]
    assert [l.split(':')[0] for l in lines] == [str(synth/'pug_2.jpg'), str(synth/'Birman_2.jpg')]
    assert all(len(l.split(', ')) == 2 for l in lines)

BAD = [(['train', '--epochs', '-3'], 'petbreeds train: error: argument --epochs: epochs must be at least 0, not -3'),
       (['train', '--recipe', 'manual', '--lr-max', '1e-3:1e-6'], 'petbreeds train: error: argument --lr-max: the range 1e-3:1e-6 is written backwards'),
       (['train', '--arch', 'alexnet'], "petbreeds train: error: argument --arch: invalid choice: 'alexnet'"),
       (['train', '--data', '/no/such/folder'], "petbreeds train: error: Data folder '/no/such/folder' does not exist"),
       (['predict', '/no/model.pkl', 'x.jpg'], "petbreeds predict: error: model file '/no/model.pkl' does not exist"),
       (['evaluate', '/no/model.pkl', '/tmp'], "petbreeds evaluate: error: model file '/no/model.pkl' does not exist"),
       (['train', '--curve', 'curve.jpg'], "petbreeds train: error: argument --curve: 'curve.jpg' is not a .png file name"),
       (['train', '--curve', '/no/such/folder/c.png'], "petbreeds train: error: argument --curve: '/no/such/folder/c.png': its folder does not exist"),
       (['train', '--curve', 'c.png'], "petbreeds train: error: --curve measures the few-shot (ncm) recipe's learning curve"),
       (['fly'], "petbreeds: error: argument COMMAND: invalid choice: 'fly'")]

@pytest.mark.parametrize('argv,msg', BAD, ids=[' '.join(a) for a,_ in BAD])
def test_bad_options(argv, msg, capsys, monkeypatch):
    "In process: one line on stderr, exit code 2, no traceback."
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    from petbreeds.cli import main
    with pytest.raises(SystemExit) as e: main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count('\n') == 1 and err.startswith(msg), err

def test_bad_data_and_profile_errors(trained, tmp_path, capsys, monkeypatch):
    from petbreeds.cli import main
    _, model = trained
    (tmp_path/'readme.txt').write_text('no pets here')
    monkeypatch.setenv('PETBREEDS_PROFILE', 'offline')
    with pytest.raises(SystemExit) as e: main(['evaluate', str(model), str(tmp_path)])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(f"petbreeds evaluate: error: No usable images in '{tmp_path}'")
    monkeypatch.setenv('PETBREEDS_PROFILE', 'fastest')
    with pytest.raises(SystemExit) as e: main(['train'])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("petbreeds train: error: Unknown profile 'fastest'")

def test_quiz_on_a_busy_port(capsys):
    "`petbreeds quiz --port N` with N taken: one line naming the port, exit code 2, before anything starts."
    import socket
    from petbreeds.cli import main
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen(); port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e: main(['quiz', '--port', str(port)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'petbreeds quiz: error: Port {port} on 127.0.0.1 is already in use'), err

def test_console_script_one_line_error():
    "The installed `petbreeds` script: a bad option is one line on stderr and exit code 2, in a real process."
    exe = shutil.which('petbreeds')
    if exe is None: pytest.skip('petbreeds is not installed as a console script (pip install -e .)')
    r = run([exe, 'train', '--lr-max', '1e-3:1e-6', '--recipe', 'manual'])
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and 'written backwards' in r.stderr and 'Traceback' not in r.out

@pytest.mark.slow   # the whole benchmark
def test_bench_prints_all_four_ratios(tmp_path):
    "`petbreeds bench` (offline): the data pipeline, loss, lr finder and throughput ratios, printed and written as JSON."
    # one thread (here and below): the other pytest worker has the other core; two threads each would only fight over them
    r = run_python(PETBREEDS + ['bench', '--profile', 'offline', '--threads', '1', '--arch', 'efficientnet_lite0',
                         '--out', str(tmp_path/'bench.json')], timeout=1200)
    assert r.returncode==0, r.out[-3000:]
    for s in ('data pipeline', 'cross_entropy (ours / F.cross_entropy)', 'lr finder (ours / fastai lr_find)', 'training efficientnet_lite0 float32'):
        assert s in r.stdout, r.stdout
    res = json.loads((tmp_path/'bench.json').read_text())
    assert res['profile'] == 'offline'
    ok = lambda r: 0.05 < r < 20   # a measured ratio of two times: not 0, inf or nan
    assert ok(res['pipeline']['ratio']) and ok(res['lr_find']['time_ratio'])
    assert ok(res['pipeline']['ratio_to_two']) and 'crop folded in / two resamplings' in r.stdout   # offline folds the crop
    assert res['cross_entropy']['max_diff'] < 1e-5 and res['cross_entropy']['max_grad_diff'] < 1e-5
    assert {(o['arch'], o['precision']) for o in res['throughput']} >= {('efficientnet_lite0', 'float32'), ('efficientnet_lite0', 'bfloat16')}
    f = res['few_shot']   # the few-shot row: fit time, feature images/s against a plain forward pass of the same backbone
    assert 'few-shot fit (features / plain forward pass)' in r.stdout and ok(f['ratio']) and f['fit_s'] > f['head_s'] > 0 and f['n_images'] == 148

@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f'no real photo sample at {SAMPLE}')
@pytest.mark.slow   # trains on the real photos at 288 px
def test_train_evaluate_predict_real_photos(tmp_path):
    "The 148 real photos (test data only, never copied into the repo): the default few-shot recipe, then evaluate and predict."
    out = tmp_path/'real'
    r = run_python(PETBREEDS + ['train', '--data', str(SAMPLE), '--threads', '1', '--out', str(out), '--curve', str(tmp_path/'curve.png')],
                   timeout=1200)
    assert r.returncode==0, r.out[-4000:]
    res = json.loads((out/'results.json').read_text())
    assert res['n_images'] == 148 and res['split'] == 'cv:4' and res['recipe'] == 'ncm'   # each photo predicted without itself
    assert res['error_rate'] <= 0.13, res['error_rate']    # nested estimate: 9.1 ± 1.2 % over 5 fold assignments measured
    assert len(res['errors']) == 5 and 'nested cross-validation' in r.stdout and ' ± ' in r.stdout
    assert set(res['curve']) == {'1', '2', '3'} and (tmp_path/'curve.png').read_bytes()[:4] == b'\x89PNG'
    meta = json.loads((out/'model.json').read_text())
    assert meta['arch'] == 'efficientnet_lite2' and meta['few_shot']['probs'] is True and meta.get('head') is None
    r = run_python(PETBREEDS + ['evaluate', str(out), str(SAMPLE), '--json', str(tmp_path/'ev.json')])
    assert r.returncode==0, r.out[-3000:]
    assert json.loads((tmp_path/'ev.json').read_text())['n_images'] == 148
    photo = sorted(SAMPLE.glob('Birman_*.jpg'))[0]
    r = run_python(PETBREEDS + ['predict', str(out/'model.json'), str(photo), '--top-k', '3'])
    assert r.returncode==0, r.out[-3000:]
    assert r.stdout.count(', ') >= 2 and str(photo) in r.stdout
