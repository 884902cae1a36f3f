r"""Lake et al.'s one-shot task: 20-way episodes within one alphabet of Omniglot's evaluation set.

A trained run (`load_learner`) classifies episodes of the original protocol
(Lake, Salakhutdinov & Tenenbaum 2015): 20 characters of one evaluation
alphabet, one drawer's drawing of each as the support set, another drawer's
as the queries. The drawings are read from the official files at full size
(105x105) and prepared by the learner exactly as its training data was.
Prints the error with its 95% interval (over episodes, and per alphabet) and
adds a record to the run's `eval.json` (`--out` for another file).

  python experiments/lake.py --workdir=runs/lake_protonet
  python experiments/lake.py --workdir=runs/lake_protonet --runs_dir=all_runs
  python experiments/lake.py --workdir=runs/a,runs/b --tta=8   # an ensemble, augmented

`--runs_dir` scores Lake's published 20 runs instead (the folder holding
`run01` ... `run20`, each with `class_labels.txt`, `training/` and `test/`),
the mean error over the runs as in the paper. `--tta=N` averages the
learner's probabilities over the images as given and N - 1 random affine
distortions of support and queries (Koch et al. 2015's ranges); several
run directories average their learners' probabilities (an ensemble; the
record goes to the first). Train on the background set
only (`--split=lake`; the preset `experiments/configs/omniglot_lake.flags`):
the script counts the run's recorded training classes from the evaluation
set and says so, loudly, when there are any.
"""

import glob
import io
import json
import os
import sys
import time
import zipfile

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

from metajax import cli
from metajax import evaluate
from metajax import rundir
from metajax.data import episodes, omniglot, omniglot_augment, splits

flags.DEFINE_list('workdir', None, 'run directory written by train.py; several (comma-'
                  'separated) average their probabilities', required=True)
flags.DEFINE_integer('num_episodes', 2000, 'episodes of the evaluation set', lower_bound=1)
flags.DEFINE_integer('seed', 0, 'seed of the episodes')
flags.DEFINE_integer('step', None, 'checkpoint step (default: the best on validation if the run '
                     'kept one, else the latest)')
flags.DEFINE_integer('inner_steps', None, 'inner steps of adaptation (default: as in training)')
flags.DEFINE_string('data_dir', None, 'folder of the official Omniglot zips or their folders '
                    '(default: the one the run recorded, else $METAJAX_OMNIGLOT_DIR, else '
                    '~/.cache/metajax/omniglot)')
flags.DEFINE_string('runs_dir', None, 'score Lake\'s 20 published runs in this folder '
                    '(run01 ... run20) instead of drawn episodes')
flags.DEFINE_integer('tta', 1, 'test-time augmentation: average over the images and tta - 1 '
                     'random affine distortions of them', lower_bound=1)
flags.DEFINE_string('out', None, 'JSON file the record is added to (default: the run\'s '
                    'eval.json)')
FLAGS = flags.FLAGS

WAYS = 20
SPLIT = 'lake_one_shot'  # the record's `split`: Lake's protocol, not a split of the run's data


def _png(data: bytes) -> np.ndarray:
  """uint8 [H, W] of a PNG, as drawn (paper 255, strokes 0)."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('L'), np.uint8)


def _png_file(path: str) -> np.ndarray:
  with open(path, 'rb') as f:
    return _png(f.read())


def evaluation_set(data_dir: str) -> tuple[list[str], np.ndarray]:
  """(characters '<Alphabet>/characterNN', uint8 [659, 20, 105, 105]) of images_evaluation.

  Drawing i of a character is drawer i + 1's (the files' `_DD` suffix).
  """
  path = os.path.join(data_dir, 'images_evaluation.zip')
  folder = os.path.join(data_dir, 'images_evaluation')
  if os.path.isfile(path):
    with zipfile.ZipFile(path) as archive:
      names = sorted(n for n in archive.namelist() if n.endswith('.png'))
      read = {n: archive.read(n) for n in names}.__getitem__
  elif os.path.isdir(folder):
    names = sorted(os.path.relpath(p, data_dir).replace(os.sep, '/')
                   for p in glob.glob(os.path.join(folder, '*', '*', '*.png')))

    def read(name):
      with open(os.path.join(data_dir, name), 'rb') as f:
        return f.read()
  else:
    raise FileNotFoundError(f'--data_dir={data_dir}: holds neither images_evaluation.zip nor '
                            'the folder images_evaluation/')
  by_character: dict[str, list[str]] = {}
  for name in names:
    parts = name.split('/')
    by_character.setdefault(f'{parts[1]}/{parts[2]}', []).append(name)
  characters = sorted(by_character)
  for c in characters:
    if len(by_character[c]) != omniglot.IMAGES_PER_CHARACTER:
      raise ValueError(f'--data_dir={data_dir}: {c} has {len(by_character[c])} drawings, '
                       f'expected {omniglot.IMAGES_PER_CHARACTER}')
  images = np.stack([np.stack([_png(read(n)) for n in by_character[c]]) for c in characters])
  return characters, images


def sampler(characters: list[str], images: np.ndarray, seed: int) -> episodes.EpisodeSampler:
  """20-way 1-shot episodes within one alphabet, one drawer's support, another's queries."""
  alphabets = sorted({c.split('/')[0] for c in characters})
  groups = np.array([alphabets.index(c.split('/')[0]) for c in characters])
  classes = np.stack([np.arange(len(characters)), np.zeros(len(characters), np.int64)], -1)
  return episodes.EpisodeSampler(images, classes, WAYS, 1, 1, seed, name='evaluation',
                                 groups=groups, group_names=alphabets, shared_drawings=True)


def classify(learners, support_x, support_y, query_x, copies: int, rng, num_steps=None):
  """Labels of the queries: the argmax of the probabilities averaged over learners and copies.

  `support_x`, `query_x`: float [n, H, W, 1], paper white (1.0). Copy 0 is
  the images as given, each other copy a random affine distortion of every
  support and query image.
  """
  total = 0.0
  for c in range(copies):
    if c:
      support_x, query_x = (
          omniglot_augment.random_affine(x[..., 0], rng, fill=1.0)[..., None]
          for x in (support_x, query_x))
    for learner in learners:
      classes, logits = learner.logits(support_x, support_y, query_x, num_steps)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      total = total + p / p.sum(-1, keepdims=True)
  return classes[np.argmax(total, -1)]


def score_episodes(learners, sample: episodes.EpisodeSampler, num_episodes: int, seed: int,
                   copies: int = 1, num_steps=None) -> tuple[np.ndarray, list[str]]:
  """(error of each episode, its alphabet) over `num_episodes` drawn episodes."""
  errors, alphabets = [], []
  for i in range(num_episodes):
    task = sample.episode(np.random.default_rng([seed, i]))
    predicted = classify(learners, task.support.x, task.support.y, task.query.x, copies,
                         np.random.default_rng([seed, i, 1]), num_steps)
    errors.append(float(np.mean(predicted != task.query.y)))
    character = sample.choose(np.random.default_rng([seed, i]))[0, 0]  # the same first draws
    alphabets.append(sample.group_names[sample.groups[character]])  # class i is character i
  return np.array(errors), alphabets


def read_run(folder: str) -> tuple[list[str], list[str], list[int]]:
  """(training image paths, test image paths, index of each test image's training image).

  `class_labels.txt` pairs each test image with its training image, one pair
  a line; paths are relative to the folder holding the run (as in Lake's
  demo) or to the run itself.
  """
  labels = os.path.join(folder, 'class_labels.txt')
  if not os.path.isfile(labels):
    raise FileNotFoundError(f'--runs_dir: {folder} has no class_labels.txt')

  def find(path):
    for base in (os.path.dirname(folder), folder):
      if os.path.isfile(os.path.join(base, path)):
        return os.path.join(base, path)
    raise FileNotFoundError(f'--runs_dir: {labels} names {path}, which is in neither '
                            f'{os.path.dirname(folder)} nor {folder}')

  with open(labels) as f:
    pairs = [line.split() for line in f if line.strip()]
  if any(len(p) != 2 for p in pairs):
    raise ValueError(f'--runs_dir: {labels}: each line must be "<test image> <training image>"')
  test = [find(t) for t, _ in pairs]
  training = sorted({find(c) for _, c in pairs})
  return training, test, [training.index(find(c)) for _, c in pairs]


def score_runs(learners, runs_dir: str, seed: int, copies: int = 1,
               num_steps=None) -> tuple[np.ndarray, list[str]]:
  """(error of each of Lake's runs, their folder names)."""
  folders = sorted(d for d in glob.glob(os.path.join(runs_dir, 'run*')) if os.path.isdir(d))
  if not folders:
    raise FileNotFoundError(f'--runs_dir={runs_dir}: no run folders (run01 ... run20) in it')
  errors = []
  for r, folder in enumerate(folders):
    training, test, answers = read_run(folder)
    load = lambda paths: np.stack([_png_file(p) for p in paths])[..., None] / 255.0
    predicted = classify(learners, load(training), np.arange(len(training)), load(test), copies,
                         np.random.default_rng([seed, r, 1]), num_steps)
    errors.append(float(np.mean(predicted != np.array(answers))))
  return np.array(errors), [os.path.basename(f) for f in folders]


def evaluation_characters_in_training(workdir: str) -> int:
  """How many of the run's recorded training classes are characters of the evaluation set."""
  recorded = rundir.read_classes(rundir.locate(workdir)[0]) or {}
  return sum(c.startswith('evaluation/') for c in recorded.get('train', {}).get('classes', []))


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    learners = [rundir.load_learner(w, FLAGS.step) for w in FLAGS.workdir]
    for workdir, learner in zip(FLAGS.workdir, learners):
      if learner.config.dataset != 'omniglot':
        raise ValueError(f'--workdir={workdir}: a run on {learner.config.dataset}; '
                         'Lake\'s task needs a run trained on Omniglot')
    if FLAGS.inner_steps is not None and FLAGS.inner_steps < 0:
      raise ValueError(f'--inner_steps={FLAGS.inner_steps}: must be >= 0')
    leaked = sum(evaluation_characters_in_training(w) for w in FLAGS.workdir)
    start = time.time()
    if FLAGS.runs_dir is not None:
      errors, names = score_runs(learners, FLAGS.runs_dir, FLAGS.seed, FLAGS.tta,
                                 FLAGS.inner_steps)
      source = f'runs: {os.path.abspath(FLAGS.runs_dir)}'
    else:
      data_dir = (FLAGS.data_dir or learners[0].config.get('data_dir')
                  or omniglot.default_data_dir())
      characters, images = evaluation_set(data_dir)
      errors, names = score_episodes(learners, sampler(characters, images, FLAGS.seed),
                                     FLAGS.num_episodes, FLAGS.seed, FLAGS.tta,
                                     FLAGS.inner_steps)
      source = f'images_evaluation, within one alphabet, paired drawers, seed {FLAGS.seed}'
    if FLAGS.tta > 1:
      source += f', test-time augmentation x{FLAGS.tta}'
    if len(learners) > 1:
      source += ', ensemble of ' + ', '.join(os.path.abspath(w) for w in FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {cli.flag_words(e)}')
  seconds = time.time() - start
  mean, ci95 = evaluate.mean_ci95(errors)
  learner = learners[0]
  print(f'{"+".join(l.config.algorithm for l in learners)} on Lake\'s one-shot task ({source}): error '
        f'{100 * mean:.2f} +- {100 * ci95:.2f} % over {len(errors)} '
        f'{"runs" if FLAGS.runs_dir else "episodes"} of 20-way 1-shot '
        f'(checkpoint step {learner.step}, {seconds:.0f} s)')
  per = {}
  for name, error in zip(names, errors):
    per.setdefault(name, []).append(error)
  for name in sorted(per):
    m, c = evaluate.mean_ci95(per[name]) if len(per[name]) > 1 else (per[name][0], 0.0)
    print(f'  {name}: {100 * m:.2f} +- {100 * c:.2f} % ({len(per[name])})')
  if leaked:
    print(f'WARNING: {leaked} of the training classes of {" and ".join(FLAGS.workdir)} are '
          'characters of the evaluation set: this is not Lake\'s protocol (train with '
          '--split=lake)')
  record = {'metric': 'error', 'mean': mean, 'ci95': ci95, 'num_tasks': len(errors),
            'inner_steps': FLAGS.inner_steps, 'split': SPLIT, 'source': source,
            'algorithm': '+'.join(l.config.algorithm for l in learners), 'dataset': 'omniglot', 'ways': WAYS,
            'shots': 1, 'query': 1, 'checkpoint_step': learner.step,
            'evaluation_characters_in_training': leaked,
            'per_alphabet' if FLAGS.runs_dir is None else 'per_run':
                {k: float(np.mean(v)) for k, v in sorted(per.items())}}
  workdir, _ = rundir.locate(FLAGS.workdir[0])
  if FLAGS.out is None and not os.access(workdir, os.W_OK):
    print(f'{workdir} is read-only (--out=FILE writes the record); it is:')
    print(json.dumps(record, indent=2))
    return
  print(f'written: {rundir.write_eval(workdir, [record], FLAGS.out)}')


if __name__ == '__main__':
  app.run(main)
