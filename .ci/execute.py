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


def is_progress_frame(o)->bool:
    "Is output `o` one frame of a fastprogress bar? (A kernel redraws one display; execnb keeps every frame.)"
    html = o.get('data', {}).get('text/html', '')
    return '<progress' in (''.join(html) if isinstance(html, list) else html)


def report(slower_than:float=5.0):
    "A `postproc` for execnb: drop progress-bar frames; print every cell that took more than `slower_than` seconds."
    def post(cell):
        cell.outputs = [o for o in cell.get('outputs', []) if not is_progress_frame(o)]
        s = time.perf_counter() - _started[cell.idx_]
        if s > slower_than: print(f'  cell {cell.idx_:3d}: {s:5.0f} s  {cell.source.splitlines()[0][:70]}', flush=True)
    return post


def as_in_jupyter():
    """Outputs as a Jupyter kernel makes them: fastprogress's HTML bars (fastcore decides it is in a notebook once, when
    first imported, so call this before anything imports fastai), and a cell ending in `;` keeps what it printed."""
    import fastcore.imports as fi
    fi.IN_IPYTHON = fi.IN_JUPYTER = fi.IN_NOTEBOOK = True
    from IPython.utils.capture import capture_output
    from fastcore.basics import AttrDict
    from execnb.shell import CaptureShell
    from IPython.core.interactiveshell import InteractiveShell
    def _run(self, raw_cell, store_history=False, silent=False, shell_futures=True, cell_id=None, stdout=True, stderr=True,
             display=True, verbose=False):
        "execnb's `CaptureShell._run`, except that `;` hides only the cell's value (as in Jupyter), not its printed lines."
        with capture_output(display=display, stdout=stdout and not verbose, stderr=stderr and not verbose) as c:
            result = InteractiveShell.run_cell(self, raw_cell, store_history, silent, shell_futures=shell_futures, cell_id=cell_id)
        return AttrDict(result=result, stdout=c.stdout, stderr=c.stderr, display_objects=c.outputs,
                        exception=result.error_in_exec or result.error_before_exec, quiet=raw_cell.rstrip().endswith(';'))
    CaptureShell._run = _run
    return CaptureShell


def execute(nb:Path, dest:Path, slow:bool=True, cuda:bool|None=None):
    "Execute notebook `nb` (cwd: its folder) and write it, whole, to `dest`; raises on the first failing cell."
    CaptureShell = as_in_jupyter()
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


def _one(name:str, dest:Path, slow:bool, threads:int)->tuple:
    "Execute notebook `name` in a fresh process: (name, `True`, or the end of its error output)."
    t = time.perf_counter()
    code = f'import sys; sys.path.insert(0, {str(ROOT/".ci")!r}); from execute import execute; ' \
           f'from pathlib import Path; execute(Path({str(NBS/name)!r}), Path({str(dest/name)!r}), slow={slow})'
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
    env.setdefault('OMP_NUM_THREADS', str(threads))   # notebooks side by side share the cores, as the tests' workers do
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
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
    threads = max(1, len(os.sched_getaffinity(0))//a.jobs)
    with ThreadPoolExecutor(a.jobs) as ex: done = list(ex.map(lambda n: _one(n, a.dest.resolve(), not a.no_slow, threads), names))
    failed = [(n, e) for n, e in done if e is not True]
    for n, e in failed: print(f'--- {n}\n{e}', file=sys.stderr)
    for n, e in done:
        if e is True: subprocess.run(['nbdev_clean', '--fname', str(a.dest/n)], cwd=ROOT, check=False)
    if failed: raise SystemExit(f'execute: {len(failed)} notebook(s) failed: {", ".join(n for n, _ in failed)}')


if __name__ == '__main__': main()
