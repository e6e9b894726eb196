__version__ = "0.0.1"

import logging, multiprocessing, os, sys, warnings
# Here, so that every entry point (a notebook, the command line, a test) reaches it before fastai is imported:

# fastai's import trips torch's deprecation of `torch.jit.script`; it is fastai's to fix, and only noise for a learner.
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)

# torch.utils.benchmark (our timer) imports torch's C++-extension builder, which logs a warning about CUDA_HOME on
# machines without CUDA at import: nothing to do with timing, so only noise in a notebook's output.
logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)

# `nbdev_test --n_workers N` runs N notebooks at once, each in a worker process, where torch would take every core for
# each of them: one thread each instead, as tests/conftest.py gives pytest's workers (unless the user set a number).
if os.environ.get('IN_TEST') and multiprocessing.parent_process() and 'OMP_NUM_THREADS' not in os.environ:
    os.environ['OMP_NUM_THREADS'] = '1'
    if 'torch' in sys.modules: sys.modules['torch'].set_num_threads(1)
