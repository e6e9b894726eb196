__version__ = "0.0.1"

import warnings
# fastai's import trips torch's deprecation of `torch.jit.script`; it is fastai's to fix, and only noise for a learner.
# Here, so that every entry point (a notebook, the command line, a test) reaches it before fastai is imported.
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
