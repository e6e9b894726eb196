#!/usr/bin/env python
"""Execute the chapter's notebooks on the real Oxford-IIIT Pet, into a copy, for the published site.

The committed notebooks keep their offline outputs. The deploy workflow runs this on a throwaway checkout just before
`nbdev_docs`, so that the public pages show real photos and real error rates (`quick` on GitHub's CPU runners, `full`
where a GPU runner is configured); nothing it writes is ever committed.

    python .ci/real_pets.py --profile quick --dest nbs              # CI: executed copies replace the checkout's nbs/
    python .ci/real_pets.py --dest /tmp/real 05_lr_finder            # one notebook, somewhere else
"""
import argparse, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ['01_data_layout', '02_presizing', '03_cross_entropy', '04_interpretation', '05_lr_finder', '06_transfer',
           '07_architectures']


sys.path.insert(0, str(ROOT/'.ci'))
from execute import as_in_jupyter, execute as execute_nb


def execute(names, dest:Path, profile:str, src:Path=ROOT/'nbs'):
    "Execute each notebook in `names` from `src` into `dest`, figures kept; `slow` cells only in the `full` profile."
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        nb = src/(name if name.endswith('.ipynb') else f'{name}.ipynb')
        if not nb.exists(): raise SystemExit(f'real_pets: no notebook {nb.name} in {src}')
        t = time.perf_counter()
        try: execute_nb(nb, dest/nb.name, slow=profile == 'full')
        except Exception as e: raise SystemExit(f'real_pets: {nb.name} failed on the {profile} profile: {type(e).__name__}: {e}')
        print(f'{nb.name}: executed in {time.perf_counter()-t:.0f} s -> {dest/nb.name}', flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', default=CHAPTER, help='notebook names (default: the chapter, 01-07)')
    ap.add_argument('--profile', default='quick', choices=('quick', 'full'), help='quick (CPU) or full (GPU)')
    ap.add_argument('--dest', required=True, type=Path, help='folder for the executed copies')
    a = ap.parse_args(argv)
    as_in_jupyter()                                  # before fastai is imported: its progress bars as HTML
    os.environ['PETBREEDS_PROFILE'] = a.profile
    os.environ.pop('PETBREEDS_DATA', None)          # the real data set, not a local folder
    from petbreeds.profiles import get_profile, ProfileError
    try: get_profile(a.profile)                      # data and weights reachable? (one line: which run this is)
    except ProfileError as e: raise SystemExit(f'real_pets: {e}')
    execute(a.notebooks, a.dest.resolve(), a.profile)


if __name__ == '__main__': main()
