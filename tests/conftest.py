import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get('PETBREEDS_SAMPLE', ROOT.parent/'shared'/'data'/'oxford-pets-sample'/'images'))

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
