"""Shared test helpers, and how the suite runs fast: tests spread over one pytest-xdist worker per core (options in
pyproject.toml), longest first; the synthetic pets are drawn once, before the workers start; a table of times at the end.

Two tiers. `python -m pytest tests` is the default tier: every notebook without its `#| slow` cells (nbdev's own skip
flag) and every test not marked `slow`. `python -m pytest tests --slow` (or `PETBREEDS_SLOW=1`) runs the slow cells and
the slow tests too; `--slow -m slow` runs only what the default tier leaves out (`.ci/run` runs both tiers)."""
import fcntl, json, multiprocessing as mp, os, runpy, subprocess, sys, time, traceback, warnings
from contextlib import contextmanager
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get('PETBREEDS_SAMPLE', ROOT.parent/'shared'/'data'/'oxford-pets-sample'/'images'))
CACHE = ROOT/'.ci-cache'
def times_file(config)->Path:
    "Each test's last duration, per tier: the next run starts the longest first."
    return CACHE/f"test-times{'-slow' if slow_tier(config) else ''}.json"

def offline_env(**kw):
    "The environment tests run notebooks and commands in: the offline profile unless a test says otherwise."
    env = {k:v for k,v in os.environ.items() if k not in ('PETBREEDS_DATA', 'PETBREEDS_PETS_URL')}
    env['PETBREEDS_PROFILE'] = 'offline'
    env.update({k:str(v) for k,v in kw.items()})
    return env

def run(cmd, env=None, cwd=ROOT, timeout=900):
    "Run `cmd`, returning the CompletedProcess; stdout and stderr together in `.out`."
    r = subprocess.run(cmd, cwd=cwd, env=env or offline_env(), capture_output=True, text=True, timeout=timeout)
    r.out = r.stdout + r.stderr
    return r

# --- Python run in a child of a fork server that has already imported fastai -------------------------------------------

PRELOAD = ['torch', 'fastai.vision.all', 'nbdev.test', 'petbreeds.backbone', 'petbreeds.presizing', 'petbreeds.profiles']
_ctx = None

def forkserver():
    "This worker's fork server, started on first use with fastai imported (the first child pays for it, once)."
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context('forkserver')
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx

def _child(target, args, env:dict, cwd, out, err):
    "In the fork server's child: `env`, `cwd`, stdout to `out` and stderr to `err`, then `target(*args)`."
    for fd, fn in ((1, out), (2, err)): os.dup2(os.open(fn, os.O_WRONLY|os.O_CREAT|os.O_APPEND, 0o644), fd)
    os.environ.clear(); os.environ.update(env)
    os.chdir(cwd)
    mp.set_start_method('fork', force=True)   # DataLoader workers as in a fresh process (a forkserver child inherits 'forkserver')
    target(*args)

def in_child(target, args, env:dict, cwd, out, err=None, timeout=900)->int|None:
    """Run `target(*args)` (a module-level function) in a child of the fork server, stdout to `out` and stderr to `err`:
    its exit code, or `None` if it was still running after `timeout` seconds (it is then killed)."""
    p = forkserver().Process(target=_child, args=(target, args, env, str(cwd), str(out), str(err or out)))
    p.start(); p.join(timeout)
    if not p.is_alive(): return p.exitcode
    p.kill(); p.join()

def _python_main(args):
    "What `python *args` would do (`-W ignore`, then `-m module`, `-c code` or a script, with its arguments); exits."
    if args[:2] == ['-W', 'ignore']: warnings.simplefilter('ignore'); args = args[2:]
    code = 0
    try:
        if args[0] == '-m': sys.argv = [args[1], *args[2:]]; runpy.run_module(args[1], run_name='__main__', alter_sys=True)
        elif args[0] == '-c': sys.argv = ['-c', *args[2:]]; exec(compile(args[1], '<string>', 'exec'), {'__name__': '__main__'})
        else: sys.argv = list(args); runpy.run_path(args[0], run_name='__main__')
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, (int, type(None))): print(e.code, file=sys.stderr)
    except BaseException: traceback.print_exc(); code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)

def run_python(args:list, env=None, cwd=ROOT, timeout=900):
    """`run([sys.executable, *args])`, but in a child of the fork server: the same exit code, stdout and stderr, without
    paying for importing fastai again (about 12 s on these machines). For tests of what the program does, not of how
    Python starts it (the console script, signals and torchrun are tested in real processes)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out, err = Path(d)/'out', Path(d)/'err'
        rc = in_child(_python_main, (list(map(str, args)),), env or offline_env(), cwd, out, err, timeout)
        if rc is None: raise subprocess.TimeoutExpired([sys.executable, *args], timeout)
        r = subprocess.CompletedProcess([sys.executable, *args], rc, *(f.read_text(errors='replace') if f.exists() else '' for f in (out, err)))
    r.out = r.stdout + r.stderr
    return r

# --- caches built once per run ---------------------------------------------------------------------------------------

@contextmanager
def file_lock(path:Path):
    "An exclusive lock on `path` across processes (two workers never build the same cache at once)."
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try: yield
        finally: fcntl.flock(f, fcntl.LOCK_UN)

def warm_caches():
    "Draw the synthetic pets the notebooks and commands use, once, into `PETBREEDS_HOME`; a no-op when they are there."
    with file_lock(CACHE/'warm.lock'):
        from petbreeds.synthetic_set import make_synthetic_pets
        make_synthetic_pets(per_breed=12, verbose=False)          # the offline profile's set
        make_synthetic_pets(6, seed=1, verbose=False)              # 10_synthetic_set's second set

def _git_status():
    "What `git status` says of the checkout (None outside git): a test run must leave it as it found it."
    try: return subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError): return None

def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, '_git_status', None)
    if before is None or (after := _git_status()) is None or after == before: return
    changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
    print(f'\nThe test run changed the checkout (tests must write to temporary folders): {changed[:5]}')
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', default=os.environ.get('PETBREEDS_SLOW', '') not in ('', '0'),
                     help="the slow tier too: notebooks' `#| slow` cells and tests marked `slow` (PETBREEDS_SLOW=1)")

def slow_tier(config)->bool: return bool(config.getoption('--slow'))

def _workers(config): return int(getattr(config, 'workerinput', {}).get('workercount', 0))

@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist: fine without it
def pytest_xdist_auto_num_workers(config):
    "`-n auto`: one worker per core this process may use (xdist's own count can see one core of two hyperthreads)."
    return len(os.sched_getaffinity(0))

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: in the slow tier only (`--slow`): long training runs, whole-program runs')
    config.addinivalue_line('markers', 'slow_cells: a notebook with `#| slow` cells (in the slow tier, run with them)')
    os.environ.setdefault('PETBREEDS_HOME', str(CACHE/'petbreeds'))
    os.environ.setdefault('FASTAI_HOME', str(CACHE/'fastai'))
    os.environ.setdefault('MPLBACKEND', 'Agg')
    n = _workers(config)
    # workers share the cores: one torch thread each (and their children's), rather than all of them fighting for all cores
    if n: os.environ.setdefault('OMP_NUM_THREADS', str(max(1, len(os.sched_getaffinity(0))//n)))
    if not hasattr(config, 'workerinput') and not config.option.collectonly:   # the controller (or a run without xdist)
        config._git_status = _git_status()
        t = time.perf_counter()
        warm_caches()
        config._warm_s = time.perf_counter()-t

# --- longest tests first, and a table of times at the end --------------------------------------------------------------

def _module_scoped(item):
    "Does `item` use a module- or class-scoped fixture (which xdist would otherwise build once per worker)?"
    defs = getattr(getattr(item, '_fixtureinfo', None), 'name2fixturedefs', {})
    return any(d.scope in ('module', 'class') for ds in defs.values() for d in ds)

@pytest.hookimpl(tryfirst=True)   # before `-m` selects
def pytest_collection_modifyitems(config, items):
    for o in items:   # a notebook with `#| slow` cells is in the slow tier too, run with them
        if 'slow_cells' in o.keywords and slow_tier(config): o.add_marker(pytest.mark.slow)
    if not slow_tier(config):
        skip = pytest.mark.skip(reason='slow tier: run with --slow (or PETBREEDS_SLOW=1)')
        for o in items:
            if 'slow' in o.keywords: o.add_marker(skip)
    try: times = json.loads(times_file(config).read_text())
    except (OSError, ValueError): times = {}
    # unknown tests count as slow: notebooks first, then the rest in file order
    items.sort(key=lambda o: -times.get(o.nodeid, 1000 if 'test_notebooks' in o.nodeid else 500))
    for o in items:   # a module's expensive fixture is built once: its tests stay together on one worker
        if _module_scoped(o): o.add_marker(pytest.mark.xdist_group(o.module.__name__))

_durations = {}

def pytest_runtest_logreport(report):
    "Each test's time: setup (its fixtures), call and teardown together."
    k = report.nodeid.split('@')[0]   # without xdist's group suffix
    _durations[k] = _durations.get(k, 0) + report.duration

def _nb_table(durations):
    "Rows (notebook, offline s, real photos s) from the notebook tests' durations."
    rows = {}
    for k,v in durations.items():
        if '::test_notebook_' not in k or '[' not in k: continue
        name = k.rsplit('[', 1)[1].rstrip(']')
        rows.setdefault(name, [None, None])[0 if '::test_notebook_offline' in k else 1] = v
    return sorted(rows.items())

def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, 'workerinput') or not _durations: return
    tr = terminalreporter
    rows = _nb_table(_durations)
    if rows:
        tr.section('notebook times (s)')
        fmt = lambda v: '' if v is None else f'{v:.0f}'
        tr.write_line(f"{'notebook':<22} {'offline':>8} {'real photos':>12}")
        for name,(a,b) in rows: tr.write_line(f'{name:<22} {fmt(a):>8} {fmt(b):>12}')
        tr.write_line(f"{'all notebooks':<22} {sum(a or 0 for _,(a,_) in rows):>8.0f} {sum(b or 0 for _,(_,b) in rows):>12.0f}")
    tr.section('slowest tests (s)')
    for k,v in sorted(_durations.items(), key=lambda o: -o[1])[:12]: tr.write_line(f'{v:7.1f}  {k}')
    n = _workers(config) or getattr(config.option, 'numprocesses', None) or 1
    warm = getattr(config, '_warm_s', 0)
    start = getattr(tr, '_session_start', None)
    wall = warm + (start.elapsed().seconds if start is not None else float('nan'))
    tr.write_line(f'{sum(_durations.values()):.0f} s of tests on {n} worker(s) in {wall:.0f} s, '
                  f'of which {warm:.0f} s warming the caches ({len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f})')
    try:
        f = times_file(config)
        old = json.loads(f.read_text()) if f.exists() else {}
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({**old, **{k: round(v, 1) for k,v in _durations.items()}}, indent=1, sort_keys=True))
    except (OSError, ValueError): pass

def tiny_learner(root:Path, per_breed:int, splitter):
    "A two-breed resnet18 (no pretrained weights) on `per_breed` small images of each breed drawn into `root/src`: (learner, src)."
    import numpy as np
    from PIL import Image
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, Resize, aug_transforms, using_attr, RegexLabeller, get_image_files
    from petbreeds.backbone import pets_learner
    from petbreeds.data import PetImage, PETS_PAT
    src = root/'src'; src.mkdir()
    rng = np.random.default_rng(0)
    for b,c in (('Birman', 40), ('pug', 200)):
        for i in range(per_breed): Image.fromarray((rng.random((40, 50, 3))*60+c).astype(np.uint8)).save(src/f'{b}_{i}.jpg')
    block = DataBlock(blocks=(ImageBlock(PetImage), CategoryBlock), get_items=get_image_files, splitter=splitter,
                      get_y=using_attr(RegexLabeller(PETS_PAT), 'name'), item_tfms=Resize(40), batch_tfms=aug_transforms(size=32))
    return pets_learner(block.dataloaders(src, bs=2, device='cpu'), 'resnet18', pretrained=False), src


def lab_api(base:str, token:str, path:str, method='GET', body=None)->bytes:
    "One call of a Jupyter server's REST API, with its token."
    import urllib.request
    req = urllib.request.Request(f'{base}{path}', method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={'Authorization': f'token {token}', 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=10) as r: return r.read()

@contextmanager
def jupyter_lab(tmp:Path, env:dict):
    """JupyterLab serving folder `tmp` on 127.0.0.1 with a new token, its config, data, settings, workspace and runtime
    folders inside `tmp` (so nothing of the user's is read or written), `env` for the server and its kernels; yields
    (base URL, token) once it answers, and stops it after."""
    import secrets, socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**env, **{v: str(tmp/d) for v, d in [('JUPYTER_CONFIG_DIR', 'config'), ('JUPYTER_DATA_DIR', 'data'),
           ('JUPYTERLAB_SETTINGS_DIR', 'settings'), ('JUPYTERLAB_WORKSPACES_DIR', 'workspaces'), ('JUPYTER_RUNTIME_DIR', 'runtime')]}}
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={tmp}', '--LabApp.expose_app_in_browser=True',
           '--ServerApp.port_retries=0', '--allow-root']   # CI containers often run as root
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=open(tmp/'lab.log', 'w'))
    base = f'http://127.0.0.1:{port}'
    try:
        up, deadline = False, time.monotonic() + 600   # a busy machine can take minutes to import the server
        while not up and proc.poll() is None and time.monotonic() < deadline:
            try: lab_api(base, token, '/api/status'); up = True
            except OSError: time.sleep(0.5)
        if not up: pytest.fail(f'JupyterLab did not start:\n{(tmp/"lab.log").read_text()[-2000:]}')
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()

CHROMIUM = os.environ.get('PETBREEDS_CHROMIUM', __import__('shutil').which('chromium') or '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']

@contextmanager
def lab_page(base:str, token:str, width:int=1200, height:int=900):
    "Headless Debian Chromium on the JupyterLab at `base`, reaching nothing but that server; yields the page once the app runs."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': width, 'height': height})
            page.route('**/*', lambda r: r.continue_() if r.request.url.startswith((base, 'data:', 'blob:')) else r.abort())
            page.goto(f'{base}/lab?token={token}&reset', timeout=300_000)
            page.wait_for_function('window.jupyterapp && window.jupyterapp.started', timeout=300_000)
            yield page
        finally: browser.close()
