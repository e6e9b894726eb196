"The `full` profile runs the book's training calls exactly; `quick` and `offline` run the same calls, scaled down."
from dataclasses import replace
from fastai.callback.schedule import minimum, steep
from petbreeds.book import BOOK_RECIPES, EPOCH_CAP, book_calls, run_recipe
from petbreeds.profiles import PROFILES

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
        p, cap = PROFILES[pname], EPOCH_CAP[pname]
        for name, calls in BOOK.items():
            ours = _plain(book_calls(name, p))
            book = [c for c in calls if c[0] != 'to_fp16']      # no GPU here: to_fp16 is left out
            assert [m for m, *_ in ours] == [m for m, *_ in book], name
            for (m, a, k), (_, ba, bk) in zip(ours, book):
                if m in ('fine_tune', 'fit_one_cycle'):
                    assert a[0] == min(ba[0], cap) and a[1:] == ba[1:], (name, a, ba)
                    assert k == {n: (min(v, cap) if n == 'freeze_epochs' else v) for n, v in bk.items()}, (name, k)
                if m == 'lr_find': assert k == {**bk, 'num_it': p.lr_find_iters}

class _Rec:
    def __init__(self): self.calls = []
    def __getattr__(self, meth): return lambda *a, **k: self.calls.append((meth, a, k))

def test_run_recipe_prints_one_line_only_when_it_differs(capsys):
    full = replace(PROFILES['full'], device='cuda')
    r = _Rec(); run_recipe(r, 'discriminative', full)
    assert r.calls == BOOK['discriminative'] and capsys.readouterr().out == ''
    r = _Rec(); run_recipe(r, 'discriminative', PROFILES['offline'])
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and 'fit_one_cycle(12, lr_max=slice(1e-6, 1e-4))' in out and out.startswith('offline profile:')
    assert r.calls[-1] == ('fit_one_cycle', (2,), {'lr_max': slice(1e-6, 1e-4)})
