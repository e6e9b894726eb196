"""The chapter's cells make the book's training calls, exactly in `full`; `quick` and `offline` make the same calls with
fewer epochs."""
import json, re
from dataclasses import replace
from fastai.callback.schedule import minimum, steep
from petbreeds.book import BOOK_RECIPES, book_calls, chapter_calls
from petbreeds.profiles import PROFILES
from conftest import ROOT

# The book's cells (fastbook 05_pet_breeds.ipynb), written out: (method, positional args, keyword args).
BOOK = dict(
    baseline=[('fine_tune', (2,), {})],
    too_high=[('fine_tune', (1,), {'base_lr': 0.1})],
    find_lr=[('lr_find', (), {'suggest_funcs': (minimum, steep)})],
    chosen_lr=[('fine_tune', (2,), {'base_lr': 3e-3})],
    unfreeze=[('fit_one_cycle', (3, 3e-3), {}), ('unfreeze', (), {}), ('lr_find', (), {}),
              ('fit_one_cycle', (6,), {'lr_max': 1e-5})],
    discriminative=[('fit_one_cycle', (3, 3e-3), {}), ('unfreeze', (), {}),
                    ('fit_one_cycle', (12,), {'lr_max': slice(1e-6, 1e-4)})],
    deeper=[('to_fp16', (), {}), ('fine_tune', (6,), {'freeze_epochs': 3})],
)

def _plain(calls): return [(c.meth, c.args, c.kwargs) for c in calls]

def test_full_profile_is_the_book_argument_by_argument():
    assert set(BOOK_RECIPES) == set(BOOK)
    for device in ('cuda', 'cpu'):
        full = replace(PROFILES['full'], device=device)
        for name, calls in BOOK.items():
            got = _plain(book_calls(name, full))
            assert len(got) == len(calls), name
            for (m, a, k), (bm, ba, bk) in zip(got, calls):
                assert m == bm, (name, m, bm)
                assert len(a) == len(ba) and all(type(x) is type(y) and x == y for x, y in zip(a, ba)), (name, a, ba)
                assert k.keys() == bk.keys() and all(k[n] == bk[n] for n in k), (name, k, bk)

def test_small_profiles_scale_epochs_and_keep_rates():
    for pname in ('quick', 'offline'):
        p, cap = PROFILES[pname], PROFILES[pname].max_epochs
        for name, calls in BOOK.items():
            ours = _plain(book_calls(name, p))
            book = [c for c in calls if c[0] != 'to_fp16']      # no GPU here: to_fp16 is left out
            assert [m for m, *_ in ours] == [m for m, *_ in book], name
            for (m, a, k), (_, ba, bk) in zip(ours, book):
                if m in ('fine_tune', 'fit_one_cycle'):
                    assert a[0] == min(ba[0], cap) and a[1:] == ba[1:], (name, a, ba)
                    assert k == {n: (min(v, cap) if n == 'freeze_epochs' else v) for n, v in bk.items()}, (name, k)
                if m == 'lr_find': assert k == {**bk, 'num_it': p.lr_find_iters}

def _chapter_calls():
    "The training calls the chapter's cells (notebooks 04-07) make, in order, as they read in `full`."
    calls = []
    for nb in sorted((ROOT/'nbs').glob('0[4-7]_*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type']!='code' or re.search(r'^#\|\s*export', src, re.M) or any(l.lstrip().startswith(('%', '!')) for l in src.splitlines()): continue
            calls += _plain(chapter_calls(src))
    return calls

def _within(calls, seq):
    "Is `seq` a run of consecutive items of `calls`?"
    return any(calls[i:i+len(seq)] == seq for i in range(len(calls)-len(seq)+1))

def test_chapter_cells_make_the_books_calls():
    "In `full` (each `ep(n)` read as `n`), the chapter's own cells make every one of the book's training calls, in order."
    got = _chapter_calls()
    assert len(got) >= sum(map(len, BOOK.values()))
    for name, calls in BOOK.items(): assert _within(got, calls), (name, calls)
    assert PROFILES['full'].lr_find_iters == 100   # `num_it=num_it` in full is fastai's default
