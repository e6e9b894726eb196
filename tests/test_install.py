"Installing petbreeds where torch is already installed (Colab, Kaggle) keeps that torch: pip's resolver, asked with the pair pinned."
import json, subprocess, sys
import pytest
from conftest import ROOT

# the torch/torchvision pairs this machine's package index holds; README says which were tried
PAIRS = [('2.13.0', '0.28.0'), ('2.14.1', '0.29.1')]

@pytest.mark.slow
@pytest.mark.parametrize('torch,vision', PAIRS, ids=[p[0] for p in PAIRS])
def test_install_keeps_their_torch(torch, vision, tmp_path):
    pins, report = tmp_path/'colab.txt', tmp_path/'report.json'
    pins.write_text(f'torch=={torch}\ntorchvision=={vision}\n')
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet', '--ignore-installed', '--report', str(report),
                        '-c', str(pins), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode==0, r.stderr[-3000:]
    got = {i['metadata']['name']: i['metadata']['version'] for i in json.loads(report.read_text())['install']}
    assert got['torch'].split('+')[0]==torch and got['torchvision'].split('+')[0]==vision, (got['torch'], got['torchvision'])
    assert 'petbreeds' in got and 'fastai' in got
