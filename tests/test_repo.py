"The repository is consistent: library and notebooks in sync, notebooks clean, README from index, docs processable."
import ast, json, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, SAMPLE, run, run_python

def _tracked():
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT/f).is_file()]

@pytest.fixture(scope='module')
def copy(tmp_path_factory):
    "A copy of the working tree (what git would commit), to run nbdev's tools on without touching ours."
    dst = tmp_path_factory.mktemp('repo')/'petbreeds'
    for f in _tracked():
        (dst/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, dst/f)
    return dst

def _changed(copy):
    return [f for f in _tracked() if (copy/f).exists() and (copy/f).read_bytes()!=(ROOT/f).read_bytes()]

def test_export_changes_nothing(copy):
    r = run(['nbdev_export'], cwd=copy)
    assert r.returncode==0, r.out
    assert not _changed(copy), f'nbdev_export changes {_changed(copy)}: run nbdev_export and commit'

def test_notebooks_are_clean(copy):
    r = run(['nbdev_clean'], cwd=copy)
    assert r.returncode==0, r.out
    assert not _changed(copy), f'nbdev_clean changes {_changed(copy)}: run nbdev_clean (or install the hooks) and commit'

def test_notebooks_are_as_jupyter_writes_them():
    "nbformat's own form (sources and outputs as lists of lines): what JupyterLab writes, so saving never rewrites them."
    import nbformat
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        b = nb.read_text(encoding='utf-8')
        assert nbformat.writes(nbformat.reads(b, as_version=4)).rstrip('\n') == b.rstrip('\n'), (
            f'{nb.name}: not in nbformat\'s form; fix with nbformat.write(nbformat.read(nb, 4), nb), then nbdev_clean')

def test_readme_matches_index():
    r = run([sys.executable, '.ci/readme.py', '--check'])
    assert r.returncode==0, r.out

def test_import_has_no_side_effects(tmp_path):
    mods = sorted(p.stem for p in (ROOT/'petbreeds').glob('[a-z]*.py'))
    r = run([sys.executable, '-W', 'ignore', '-c', ';'.join(f'import petbreeds.{m}' for m in mods)], cwd=tmp_path)
    assert r.returncode==0, r.out
    assert r.stdout=='', r.stdout
    assert list(tmp_path.iterdir())==[]

def test_real_photos_never_committed():
    if not SAMPLE.is_dir(): pytest.skip(f'no sample at {SAMPLE}')
    names = {p.name for p in SAMPLE.iterdir()}
    tracked = _tracked()
    assert not [f for f in tracked if Path(f).name in names]
    for nb in (ROOT/'nbs').glob('*.ipynb'):
        outputs = json.dumps([c.get('outputs', []) for c in json.loads(nb.read_text())['cells']])
        assert 'oxford-pets-sample' not in outputs, f'{nb.name} has outputs from the real-photo test sample'

def _page_text(nb):
    "The text a reader sees: cell sources and every text-like output."
    out = []
    for c in nb['cells']:
        out.append(''.join(c['source']))
        for o in c.get('outputs', []):
            out.append(''.join(o.get('text', '')))
            for v in o.get('data', {}).values(): out.append(''.join(v) if isinstance(v, list) else str(v))
    return '\n'.join(out)

CHAPTER = sorted((ROOT/'nbs').glob('0[1-8]_*.ipynb'))
_DRAWS = re.compile(r'\.show_batch\(|show_images?\(|\.plot\w*\(|plot_function\(|\bplt\.|plot_top_losses|plot_confusion|\.show_results\('
                    r'|\bshow_top5\(|\bplot_softmax\(|\bplot_lr_grid\(')   # the explorables' static figures (25_explore)
_NOT_SHOWN = re.compile(r'^#\|\s*(export|hide|eval:\s*false)\b', re.M)

def _images(cell): return sum(k.startswith('image/') for o in cell.get('outputs', []) for k in o.get('data', {}))

def drawing_cells(nb:dict)->list:
    "Indices of the code cells a reader sees that draw something (a call, not a definition), with their stored image count."
    out = []
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source']) if c['cell_type']=='code' else ''
        code = re.sub(r"'[^'\n]*'|\"[^\"\n]*\"|#.*", "''", src)   # strings and comments don't draw
        if src and not _NOT_SHOWN.search(src) and _DRAWS.search(code) and not re.match(r'\s*(def|class)\s', code):
            out.append((i, _images(c)))
    return out

def test_every_drawing_cell_stores_its_figure():
    "What a learner sees on GitHub or the docs: each chapter cell that draws has its picture in the stored outputs."
    blank = {nb.name: [i for i, n in drawing_cells(json.loads(nb.read_text())) if not n] for nb in CHAPTER}
    assert sum(len(drawing_cells(json.loads(nb.read_text()))) for nb in CHAPTER) >= 20   # the check finds the chapter's figures
    assert not any(blank.values()), f'drawing cells without a stored figure (execute with python .ci/execute.py): {blank}'

def test_docs_pages_render(copy):
    """What Quarto would render: nbdev's processed notebooks have their titles and every exported symbol's docs, and the
    chapter's pages, rendered to HTML by nbconvert (Quarto cannot be installed here), show every stored figure."""
    # one process, in a child of the fork server: each notebook's imports are then already there (nbdev's default spawns
    # a fresh process per core, each importing fastai again); what it writes is the same
    r = run_python(['-c', 'from nbdev.serve import proc_nbs; proc_nbs(n_workers=0)'], cwd=copy, timeout=1500)
    assert r.returncode==0, r.out[-4000:]
    proc = copy/'_proc'
    nbs = {p.stem: json.loads(p.read_text()) for p in proc.glob('*.ipynb')}
    assert set(nbs)=={p.stem for p in (ROOT/'nbs').glob('*.ipynb')}
    pages = {re.sub(r'^\d+_', '', name): _page_text(nb) for name, nb in nbs.items()}   # 07_architectures.ipynb → architectures.html
    for name, nb in nbs.items():
        front = ''.join(nb['cells'][0]['source'])
        assert re.search(r'^title: .+', front, re.M), f'{name}: no title in {front[:200]!r}'
    sys.path.insert(0, str(ROOT))
    from petbreeds._modidx import d
    for mod, syms in d['syms'].items():
        for sym, (url, _) in syms.items():
            nbname = url.split('#')[0].split('/')[-1].replace('.html', '')
            short = sym[len(mod)+1:]
            if short.startswith('_') or '.' in short: continue   # top-level functions and classes get a docs entry
            assert re.search(rf'#{{3,4}} {re.escape(short)}\b', pages[nbname]), f'{sym}: no rendered signature in {nbname}'
            doc = (getattr(__import__(mod, fromlist=[short]), short).__doc__ or '').strip().splitlines()
            if doc: assert doc[0][:40] in pages[nbname], f'{sym}: docstring not rendered in {nbname}'
    import nbformat
    from nbconvert import HTMLExporter
    html = HTMLExporter()
    for nb in CHAPTER:
        shown = sum(_images(c) for c in json.loads(nb.read_text())['cells'] if not _NOT_SHOWN.search(''.join(c['source'])))
        body, _ = html.from_notebook_node(nbformat.read(proc/nb.name, as_version=4))
        on_page = len(re.findall(r'<img [^>]*src="data:image/', body))
        assert on_page >= shown > 0, f'{nb.name}: {shown} figures stored, {on_page} on its page'

def test_ci_runs_the_readme_test_commands():
    "`.ci/run` runs README's test command (the default tier), then the slow tier, and prints each tier's time."
    ci, readme = (ROOT/'.ci'/'run').read_text(), (ROOT/'README.md').read_text()
    for cmd in ('python -m pytest tests', 'python -m pytest tests --slow'):
        assert re.search(rf'^{re.escape(cmd)}\b', ci, re.M) and f'\n{cmd}' in readme, cmd
    assert ci.index('\npython -m pytest tests\n') < ci.index('\npython -m pytest tests --slow -m slow\n')
    assert 'default tier took' in ci and 'slow tier took' in ci

def test_imports_in_cells_of_their_own():
    "nbdev's docs processing runs every cell that imports; such cells must do nothing else (nbdev's FAQ), or the docs build runs them without their context."
    bad = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            src = ''.join(c['source'])
            if c['cell_type']!='code' or re.search(r'^#\|\s*(export|exporti|exports|eval:\s*false)\b', src, re.M): continue
            try: body = ast.parse(src).body
            except SyntaxError: continue   # magics; nbdev skips what it cannot parse
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) for t in body for n in ast.walk(t)) and not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body):
                bad.append(f'{nb.name} cell {i}: {src[:60]!r}')
    assert not bad, '\n'.join(bad)

def test_notebooks_as_a_learner_opens_them():
    """Each notebook names its kernel (JupyterLab asks for none) and its stored outputs hold no paths of the machine that ran it,
    nor the frames of a progress bar (a kernel redraws one display; an executor that keeps every frame stores hundreds)."""
    local = re.compile(r'(?<![\w.~])/(?:root|tmp|work|home/\w+)/')
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        j = json.loads(nb.read_text())
        assert j['metadata'].get('kernelspec', {}).get('name')=='python3', f'{nb.name}: no python3 kernelspec'
        outs = json.dumps([c.get('outputs', []) for c in j['cells']])
        assert not local.findall(outs), f'{nb.name}: local paths in outputs, e.g. {local.search(outs).group()}'
        assert '<progress' not in outs, f'{nb.name}: progress-bar frames stored (execute with python .ci/execute.py, which drops them)'

def _defs(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

def test_code_is_nbdev_sized():
    "Functions under 50 lines and lines under 160 characters in the library (nbdev's size; issue 9)."
    long_fns, long_lines = [], []
    for p in sorted((ROOT/'petbreeds').glob('*.py')):
        if p.name=='_modidx.py': continue
        src = p.read_text()
        long_fns += [f'{p.name}:{n.name} ({n.end_lineno-n.lineno+1} lines)' for n in _defs(ast.parse(src)) if n.end_lineno-n.lineno >= 50]
        long_lines += [f'{p.name}:{i} ({len(l)} chars)' for i, l in enumerate(src.splitlines(), 1) if len(l) > 160]
    assert not long_fns, long_fns
    assert not long_lines, long_lines

def _imports(p:Path)->set:
    "The petbreeds modules that module `p` imports, at the top or inside a function."
    out = set()
    for n in ast.walk(ast.parse(p.read_text())):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ''
            if n.level: out |= {mod.split('.')[0]} if mod else {a.name for a in n.names}
            elif mod.startswith('petbreeds.'): out.add(mod.split('.')[1])
            elif mod == 'petbreeds': out |= {a.name for a in n.names}
        elif isinstance(n, ast.Import): out |= {a.name.split('.')[1] for a in n.names if a.name.startswith('petbreeds.')}
    return out - {p.stem}

def test_imports_form_no_circle():
    "Modules import one way (issue 21): no module reaches itself through the modules it imports, lazily or not."
    mods = {p.stem: p for p in (ROOT/'petbreeds').glob('*.py') if p.stem not in ('_modidx', '__init__')}
    graph = {m: _imports(p) & set(mods) for m, p in mods.items()}
    def reach(m, seen):
        for d in graph[m] - seen: seen.add(d); reach(d, seen)
        return seen
    circles = sorted(m for m in graph if m in reach(m, set()))
    assert not circles, {m: sorted(graph[m]) for m in circles}
    assert 'profiles' not in graph['backbone'], 'backbone imports profiles for its side effect again'

def test_modules_are_small():
    "No module over about 350 lines (issue 21), the size at which a reader still holds one in their head."
    big = {p.name: n for p in (ROOT/'petbreeds').glob('*.py') if p.stem!='_modidx' and (n := len(p.read_text().splitlines())) > 360}
    assert not big, big

def test_one_error_root_and_one_atomic_writer():
    "Every public exception derives from PetbreedsError; only petbreeds.safety renames files into place (issue 21)."
    import importlib, inspect
    from petbreeds.safety import PetbreedsError
    mods = [p.stem for p in (ROOT/'petbreeds').glob('*.py') if p.stem not in ('_modidx', '__init__')]
    bad = [f'{m}.{n}' for m in mods for n, o in vars(importlib.import_module(f'petbreeds.{m}')).items()
           if inspect.isclass(o) and issubclass(o, BaseException) and not n.startswith('_')
           and o.__module__.startswith('petbreeds') and not issubclass(o, PetbreedsError)]
    assert not bad, bad
    renames = [p.name for p in (ROOT/'petbreeds').glob('*.py') if re.search(r'os\.replace\(|\.replace\(dest|os\.rename\(', p.read_text())]
    assert renames == ['safety.py'], renames

def test_readme_links_badges_and_licence():
    "README works on GitHub and on the site: its links reach files and pages that exist, it shows the docs site and the CI and docs badges, and the licence is Apache-2.0."
    readme = (ROOT/'README.md').read_text()
    links = re.findall(r'\]\(([^)\s]+)\)', readme)
    repo, site = 'https://github.com/petbreeds/petbreeds/', 'https://petbreeds.github.io/petbreeds/'
    pages = {re.sub(r'^\d+_', '', p.stem) for p in (ROOT/'nbs').glob('*.ipynb')}
    for l in links:
        if l.startswith(repo+'blob/main/') or l.startswith(repo+'tree/main/'):
            assert (ROOT/l.split('/main/', 1)[1].split('#')[0]).exists(), l
        elif l.startswith(repo+'actions/workflows/'):
            assert (ROOT/'.github'/'workflows'/l[len(repo+'actions/workflows/'):].split('/')[0]).exists(), l
        elif l.startswith(site) and l.endswith('.html'): assert l[len(site):-5] in pages, l
        elif not re.match(r'[a-z]+:', l) and not l.startswith('#'): assert (ROOT/l.split('#')[0]).exists(), l
    assert site in readme and 'badge.svg' in readme
    licence = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in licence and 'Version 2.0' in licence

def test_licence_and_data_files_in_sdist_and_wheel(tmp_path):
    "What `pip install` and PyPI get: the sdist and the wheel carry LICENSE, the questions and the traits table."
    import tarfile, zipfile
    src = tmp_path/'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns('.git', '.venv', '.ci-cache', '_proc', '_docs', 'build', '*.egg-info'))
    r = run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path/'dist'), 'bdist_wheel', '-d', str(tmp_path/'dist')], cwd=src, timeout=600)
    assert r.returncode==0, r.out[-3000:]
    sdist, = (tmp_path/'dist').glob('*.tar.gz'); wheel, = (tmp_path/'dist').glob('*.whl')
    in_sdist = {n.split('/', 1)[1] for n in tarfile.open(sdist).getnames() if '/' in n}
    in_wheel = zipfile.ZipFile(wheel).namelist()
    assert {'LICENSE', 'petbreeds/questions.yaml', 'petbreeds/traits.csv'} <= in_sdist, sorted(in_sdist)[:20]
    assert any(n.endswith('LICENSE') for n in in_wheel), in_wheel
    assert {'petbreeds/questions.yaml', 'petbreeds/traits.csv'} <= set(in_wheel), in_wheel

def test_chapter_opens_in_colab_and_kaggle():
    "Each chapter notebook links to itself on Colab and Kaggle, and its first code cell installs petbreeds there only (issue 20)."
    for nb in sorted((ROOT/'nbs').glob('0[1-8]_*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        title, first = ''.join(cells[0]['source']), next(''.join(c['source']) for c in cells if c['cell_type']=='code')
        assert f'colab.research.google.com/github/petbreeds/petbreeds/blob/main/nbs/{nb.name})' in title, nb.name
        assert f'kaggle.com/kernels/welcome?src=https://github.com/petbreeds/petbreeds/blob/main/nbs/{nb.name})' in title, nb.name
        assert first.startswith('#| hide') and '[ -e /content ] || [ -e /kaggle ] && pip install' in first, f'{nb.name}: {first[:80]!r}'
        assert '-U' not in first and 'torch' not in first.split('\n')[-1], f'{nb.name}: the install must keep their torch'
