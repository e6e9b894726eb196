"""Installing petbreeds where torch is already installed (Colab, Kaggle) keeps that torch: pip's resolver, asked with the pair pinned.

The newest pairs are real wheels from this machine's package index. The oldest pair the ranges allow (torch 1.13.1 /
torchvision 0.14.1) is not in it, so it is resolved from stand-in wheels that carry those releases' own dependency metadata
and nothing else: the question is only whether every other requirement, and theirs, accepts that torch.
"""
import json, subprocess, sys, zipfile
import pytest
from conftest import ROOT

# torch 1.13.1's and torchvision 0.14.1's own Requires-Dist, less the CUDA runtime wheels (nvidia-*-cu11) a GPU runtime
# already has and no other requirement names; numpy as that era's runtimes had it (the oldest this index holds)
STANDINS = {'torch': ('1.13.1', ['typing-extensions']),
            'torchvision': ('0.14.1', ['typing-extensions', 'numpy', 'requests', 'torch (==1.13.1)', 'pillow (!=8.3.*,>=5.3.0)'])}
ERA_NUMPY = '1.23.5'

def standin_wheel(dest, name, version, requires):
    "A wheel holding only `name` `version`'s metadata: enough for pip's resolver, nothing to import."
    info = f'{name}-{version}.dist-info'
    files = {f'{info}/METADATA': '\n'.join(['Metadata-Version: 2.1', f'Name: {name}', f'Version: {version}',
                                            *[f'Requires-Dist: {r}' for r in requires]]) + '\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: petbreeds-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{info}/RECORD'] = ''.join(f'{f},,\n' for f in [*files, f'{info}/RECORD'])
    with zipfile.ZipFile(whl := dest/f'{name}-{version}-py3-none-any.whl', 'w') as z:
        for f,s in files.items(): z.writestr(f, s)
    return whl

def resolve(pins, tmp_path, *extra):
    "What `pip install petbreeds` would install with `pins` as constraints: {name: version}."
    (c := tmp_path/'runtime.txt').write_text(''.join(f'{k}=={v}\n' for k,v in pins.items()))
    report = tmp_path/'report.json'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet', '--ignore-installed', '--report', str(report),
                        '-c', str(c), *extra, str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode==0, r.stderr[-3000:]
    return {i['metadata']['name']: i['metadata']['version'].split('+')[0] for i in json.loads(report.read_text())['install']}

def test_standin_wheel(tmp_path):
    whl = standin_wheel(tmp_path, 'torch', '1.13.1', ['sympy'])
    meta = zipfile.ZipFile(whl).read('torch-1.13.1.dist-info/METADATA').decode()
    assert 'Version: 1.13.1' in meta and 'Requires-Dist: sympy' in meta

# the newest torch/torchvision pairs this machine's package index holds; README says which were tried
PAIRS = [('2.13.0', '0.28.0'), ('2.14.1', '0.29.1')]

@pytest.mark.slow
@pytest.mark.parametrize('torch,vision', PAIRS, ids=[p[0] for p in PAIRS])
def test_install_keeps_their_torch(torch, vision, tmp_path):
    got = resolve(dict(torch=torch, torchvision=vision), tmp_path)
    assert (got['torch'], got['torchvision'])==(torch, vision)
    assert 'petbreeds' in got and 'fastai' in got

@pytest.mark.slow
def test_install_keeps_the_oldest_torch(tmp_path):
    (wheels := tmp_path/'wheels').mkdir()
    for name,(version,requires) in STANDINS.items(): standin_wheel(wheels, name, version, requires)
    pins = {k: v for k,(v,_) in STANDINS.items()} | dict(numpy=ERA_NUMPY)
    got = resolve(pins, tmp_path, '--find-links', str(wheels))
    assert {k: got[k] for k in pins}==pins   # torch, torchvision and numpy all kept
    assert 'petbreeds' in got and 'fastai' in got
