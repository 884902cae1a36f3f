"""The run directory, one module a job.

A run directory holds `config.json` (the settings used, by section), `flags.txt`
(the same as a flagfile), `metrics.jsonl`, `tensorboard/`, `checkpoints/`,
`best/` (the best checkpoint on validation, with `--eval_every`) and
`eval.json`, and `classes.json` (the classes of each split, with a fingerprint
of their files, checked when the run resumes or is evaluated). `lock`: one writer at a time; `records`: the settings and results
files; `best`: the best checkpoint; `load`: `load_run` and `load_learner`,
which need nothing else: no data, no flags.
"""

from metajax.rundir.best import BestKeeper
from metajax.rundir.load import load_learner, load_run, locate
from metajax.rundir.lock import LOCK, RunDirectoryBusyError, exclusive
from metajax.rundir.records import (CLASSES, PROTOCOL, ConfigMismatchError, DataChangedError,
                                    check_classes, check_workdir, class_record, make_workdir,
                                    read_classes, read_config, read_eval, write_classes,
                                    write_config, write_eval)

__all__ = ['BestKeeper', 'CLASSES', 'check_classes', 'check_workdir', 'class_record',
           'ConfigMismatchError', 'DataChangedError', 'read_classes', 'write_classes', 'exclusive', 'load_learner',
           'load_run', 'locate', 'LOCK', 'make_workdir', 'PROTOCOL', 'read_config', 'read_eval', 'RunDirectoryBusyError',
           'write_config', 'write_eval']
