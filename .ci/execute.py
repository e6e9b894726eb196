#!/usr/bin/env python
"""Execute notebooks with their figures: how the committed outputs, the docs site and `.ci/real_pets.py` are made.

Each notebook runs in a fresh process, from `nbs/` (as nbdev_test runs it), with matplotlib's *inline* backend, so
every drawing cell stores its picture: `MPLBACKEND` is removed from the environment, since ipykernel switches to the
inline backend only when it is unset, and execnb's `CaptureShell` enables it as well. `#| slow` cells run too (the
committed outputs come from a complete run); `#| cuda` cells run only where a GPU is, and elsewhere keep the outputs
stored from a GPU run. The result is written whole (a temporary file renamed into place), then `nbdev_clean`ed.

    python .ci/execute.py                              # every notebook, in place, offline, two at a time
    python .ci/execute.py 05_lr_finder 06_transfer     # some of them
    python .ci/execute.py --dest /tmp/x 01_data_layout # a copy elsewhere
"""
import argparse, os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'


def directives(cell)->set:
    "The nbdev directives of `cell` (`slow`, `cuda`, `eval: false`, ...)."
    return set(re.findall(r'^#\|\s*([\w-]+(?::\s*\w+)?)', cell.source, re.M))


_started = {}   # cell index -> when it started

def skipper(slow:bool=True, cuda:bool=False):
    "A `preproc` for execnb: skip `eval: false` and `notest` cells, `slow` ones unless `slow`, `cuda` ones unless `cuda`."
    def skip(cell):
        if cell.cell_type != 'code': return True
        ds = directives(cell)
        if any(re.fullmatch(r'eval:\s*false', d) for d in ds) or 'notest' in ds: return True
        if ('slow' in ds and not slow) or ('cuda' in ds and not cuda): return True
        cell.outputs = []      # execnb keeps old outputs of a cell that prints nothing
        _started[cell.idx_] = time.perf_counter()
        return False
    return skip


def report(slower_than:float=5.0):
    "A `postproc` for execnb: print every cell that took more than `slower_than` seconds."
    def post(cell):
        s = time.perf_counter() - _started[cell.idx_]
        if s > slower_than: print(f'  cell {cell.idx_:3d}: {s:5.0f} s  {cell.source.splitlines()[0][:70]}', flush=True)
    return post


def execute(nb:Path, dest:Path, slow:bool=True, cuda:bool|None=None):
    "Execute notebook `nb` (cwd: its folder) and write it, whole, to `dest`; raises on the first failing cell."
    from execnb.shell import CaptureShell
    from execnb.nbio import read_nb, write_nb
    os.environ.pop('MPLBACKEND', None)
    if cuda is None:
        import torch; cuda = torch.cuda.is_available()
    nb, cwd = Path(nb).resolve(), os.getcwd()
    os.chdir(nb.parent)
    try:
        book = read_nb(nb)
        CaptureShell(mpl_format='png').run_all(book, exc_stop=True, preproc=skipper(slow, cuda), postproc=report())
    finally: os.chdir(cwd)
    tmp = Path(dest).with_name(f'.{Path(dest).name}.tmp')
    write_nb(book, tmp)
    os.replace(tmp, dest)


def _one(name:str, dest:Path, slow:bool)->tuple:
    "Execute notebook `name` in a fresh process: (name, seconds, error text or None)."
    t = time.perf_counter()
    code = f'import sys; sys.path.insert(0, {str(ROOT/".ci")!r}); from execute import execute; ' \
           f'from pathlib import Path; execute(Path({str(NBS/name)!r}), Path({str(dest/name)!r}), slow={slow})'
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
    r = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], env=env, capture_output=True, text=True)
    print(f'{name}: {"executed" if r.returncode == 0 else "FAILED"} in {time.perf_counter()-t:.0f} s', flush=True)
    if r.stdout.strip(): print(r.stdout.rstrip(), flush=True)
    return name, r.returncode == 0 or r.stderr[-3000:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', help='notebook names (default: all of nbs/)')
    ap.add_argument('--dest', type=Path, default=NBS, help='folder to write the executed notebooks to (default: in place)')
    ap.add_argument('--no-slow', action='store_true', help='skip `#| slow` cells')
    ap.add_argument('--jobs', type=int, default=2, help='notebooks executed at once')
    a = ap.parse_args(argv)
    names = [n if n.endswith('.ipynb') else f'{n}.ipynb' for n in a.notebooks] or sorted(p.name for p in NBS.glob('*.ipynb'))
    if missing := [n for n in names if not (NBS/n).exists()]: raise SystemExit(f'execute: no notebook {missing[0]} in nbs/')
    os.environ.setdefault('PETBREEDS_PROFILE', 'offline')
    a.dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(a.jobs) as ex: done = list(ex.map(lambda n: _one(n, a.dest.resolve(), not a.no_slow), names))
    failed = [(n, e) for n, e in done if e is not True]
    for n, e in failed: print(f'--- {n}\n{e}', file=sys.stderr)
    subprocess.run(['nbdev_clean', '--fname', str(a.dest)], cwd=ROOT, check=False)
    if failed: raise SystemExit(f'execute: {len(failed)} notebook(s) failed: {", ".join(n for n, _ in failed)}')


if __name__ == '__main__': main()
