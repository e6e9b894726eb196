#!/usr/bin/env python
"""Draw the project's figures from its own code: `python images/make_figures.py` (offline, about a minute on a CPU).

Each figure is written to `images/` (README, GitHub) and copied to `nbs/images/` (the notebooks and the docs site,
which Quarto renders from `nbs/`). images/quiz_app.png is made by the browser test when PETBREEDS_UPDATE_FIGURES=1, images/bench.png by the benchmark."""
import shutil, sys
from pathlib import Path
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np, torch
from skimage.data import chelsea

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
from petbreeds.presizing import presizing_views, compare_presizing
from petbreeds.losses import softmax, log_softmax, cross_entropy

def save(fig, name):
    "Write `name` to images/ and nbs/images/."
    out = root/'images'/name
    fig.savefig(out, dpi=100, bbox_inches='tight')
    plt.close(fig)
    (root/'nbs'/'images').mkdir(exist_ok=True)
    shutil.copy(out, root/'nbs'/'images'/name)
    print(f'wrote images/{name} and nbs/images/{name}')

def presizing_figure(size=128, presize=256):
    "The book's presizing figure, measured: the same augmentation three ways, scored against the ideal."
    img = chelsea()
    views = presizing_views(img, size=size, presize=presize)
    res = compare_presizing(img, size=size, presize=presize, n_timing=1)
    names = dict(reference='ideal: full resolution,\none interpolation, then shrink',
                 fastai=f'fastai: Resize({presize}) per item,\none composed interpolation to {size}',
                 traditional=f'traditional: resize to {size},\nthen warp, rotate, zoom one by one')
    fig, axs = plt.subplots(1, 3, figsize=(12, 4.9))
    for ax, (k, v) in zip(axs, views.items()):
        ax.imshow(v[0, :3].clamp(0, 1).permute(1, 2, 0).numpy()); ax.axis('off')
        score = '' if k=='reference' else f"\nSSIM {res.loc[k, 'ssim']:.3f}, PSNR {res.loc[k, 'psnr']:.1f} dB"
        ax.set_title(names[k] + score, fontsize=10)
    fig.suptitle('Presizing, measured: rotate 30°, zoom 1.2, warp 0.2 on the same photo (scores vs the ideal)')
    save(fig, 'presizing.png')

def cross_entropy_figure():
    "Cross-entropy as a pipeline: activations → softmax → log → pick the target's column, negate."
    classes = ['Birman', 'Ragdoll', 'Persian', 'beagle', 'pug']
    acts = torch.tensor([[2.1, 1.7, 0.3, -1.0, -0.5]])
    targ = torch.tensor([1])                       # the photo is a Ragdoll
    probs, logp = softmax(acts)[0], log_softmax(acts)[0]
    loss = cross_entropy(acts, targ).item()
    panels = [(acts[0], 'activations (the model)', 'any real number'),
              (probs, 'softmax: exp, then ÷ row sum', 'probabilities, sum 1'),
              (logp, 'log_softmax = x − logsumexp(x)', 'log-probabilities')]
    fig, axs = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw=dict(width_ratios=[1, 1, 1, 0.6]))
    colours = ['tab:orange' if i==targ.item() else 'tab:blue' for i in range(len(classes))]
    for ax, (v, title, ylabel) in zip(axs, panels):
        ax.bar(classes, v.numpy(), color=colours); ax.axhline(0, color='grey', lw=0.8)
        ax.set_title(title); ax.set_ylabel(ylabel); ax.tick_params(axis='x', rotation=45)
        for i, x in enumerate(v.tolist()): ax.annotate(f'{x:.2f}', (i, x), ha='center', va='bottom' if x>=0 else 'top')
    ax = axs[3]
    ax.bar(['loss'], [loss], color='tab:red'); ax.set_ylim(0, max(2, loss*1.3))
    ax.annotate(f'{loss:.2f}', (0, loss), ha='center', va='bottom')
    ax.set_title('nll: −(target\'s log-prob)')
    fig.suptitle('Cross-entropy for one image whose label is Ragdoll (orange): '
                 f'loss = −log p(Ragdoll) = −log {probs[targ.item()].item():.2f} = {loss:.2f}')
    fig.tight_layout()
    save(fig, 'cross_entropy.png')

def offline_pets_figure(n=12):
    "A batch of the offline profile's synthetic pets, as the learner's first `show_batch` shows them (before augmentation)."
    from petbreeds.profiles import Profile, get_profile
    from petbreeds.data import pets_path, get_pet_files, breed_of
    from PIL import Image
    path = pets_path(**get_profile('offline', verbose=False).path_args)
    files = get_pet_files(path, per_breed=1, verbose=False)
    rng = np.random.default_rng(42)
    pick = [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]
    fig, axs = plt.subplots(2, n//2, figsize=(2.2*n//2, 5))
    for ax, f in zip(axs.flat, pick):
        im = Image.open(f).convert('RGB'); s = min(im.size)
        im = im.crop(((im.width-s)//2, (im.height-s)//2, (im.width+s)//2, (im.height+s)//2)).resize((160, 160))
        ax.imshow(im); ax.set_title(breed_of(f), fontsize=9); ax.axis('off')
    fig.suptitle('The offline profile\'s synthetic pets: one per breed, drawn in seconds, named like Oxford-IIIT Pet')
    save(fig, 'offline_pets.png')

if __name__=='__main__':
    torch.manual_seed(42)
    presizing_figure()
    cross_entropy_figure()
    offline_pets_figure()
