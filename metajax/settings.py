"""Settings declared once, by the part that uses them.

Each part of a run (an algorithm, a dataset, a model, the run itself, the
episodes) declares its settings as a frozen dataclass whose fields are made
with `setting(...)`: name, type, default, one line of help and the limits. The
command-line flags, `--help`, validation and `config.json` are all derived
from these declarations (`metajax.config`, `metajax.cli`); nothing restates
them.

    @dataclasses.dataclass(frozen=True)
    class ReptileSettings(settings.Section):
      inner_steps: int = settings.setting(5, 'inner-loop steps', minimum=1)

This module imports nothing from metajax, so that every part can use it.
"""

import dataclasses
import typing
from typing import Any, Callable, Optional, Sequence

_MISSING = dataclasses.MISSING


def setting(default: Any, help: str, *, choices: Sequence[Any] = (),  # pylint: disable=redefined-builtin
            minimum: Optional[float] = None, above: Optional[float] = None,
            maximum: Optional[float] = None, item_minimum: Optional[float] = None,
            nonempty: bool = False) -> Any:
  """A dataclass field of a settings section.

  Args:
    default: the value when nothing else sets it. None means "unset": the help
      says what takes its place (another setting, or a value found in the data).
    help: one line for `--help`.
    choices: the allowed values.
    minimum, maximum: inclusive bounds; `above`: an exclusive lower bound.
    item_minimum: an inclusive lower bound on each item of a tuple setting.
    nonempty: a tuple setting needs at least one item.
  """
  metadata = {'help': help, 'choices': tuple(choices), 'minimum': minimum, 'above': above,
              'maximum': maximum, 'item_minimum': item_minimum, 'nonempty': nonempty}
  if isinstance(default, (list, tuple)):
    default = tuple(default)
  return dataclasses.field(default=default, metadata=metadata)


def fail(name: str, value: Any, why: str):
  """Raises `ValueError('--name=value: why')` (strings quoted, tuples comma-separated)."""
  if isinstance(value, (tuple, list)):
    text = ','.join(map(str, value))
  else:
    text = repr(value) if isinstance(value, str) else str(value)
  raise ValueError(f'--{name}={text}: {why}')


def text(value: Any) -> str:
  """A value as a flag writes it: tuples comma-separated, booleans lower case."""
  if isinstance(value, (tuple, list)):
    return ','.join(map(str, value))
  if isinstance(value, bool):
    return str(value).lower()
  return str(value)


@dataclasses.dataclass(frozen=True)
class Section:
  """A part's settings. Subclasses are frozen dataclasses of `setting(...)` fields.

  `validate()` checks every field against its declared limits, then the
  section's own `check()` (limits between its fields).
  """

  def check(self) -> None:
    """Limits that tie several fields of this section (override)."""

  def validate(self) -> 'Section':
    for field in dataclasses.fields(self):
      _check_field(field, getattr(self, field.name))
    self.check()
    return self

  def replace(self, **changes) -> 'Section':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    """Values by name, leaving out the unset ones (None)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None}


def _check_field(field: dataclasses.Field, value: Any) -> None:
  meta = field.metadata
  if value is None:
    return
  name = field.name
  if meta.get('choices') and value not in meta['choices']:
    fail(name, value, f'choose one of {", ".join(map(str, meta["choices"]))}')
  if isinstance(value, tuple):
    if meta.get('nonempty') and not value:
      fail(name, value, 'give at least one value')
    low = meta.get('item_minimum')
    if low is not None and any(v < low for v in value):
      fail(name, value, f'each value must be >= {low:g}')
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return
  if meta.get('minimum') is not None and value < meta['minimum']:
    fail(name, value, 'must be a positive integer' if meta['minimum'] == 1 and isinstance(
        value, int) else f'must be >= {meta["minimum"]:g}')
  if meta.get('above') is not None and not value > meta['above']:
    fail(name, value, f'must be > {meta["above"]:g}')
  if meta.get('maximum') is not None and value > meta['maximum']:
    fail(name, value, f'must be <= {meta["maximum"]:g}')


def kind(cls: type, name: str) -> type:
  """The base type of field `name` of section `cls`: int, float, bool, str or tuple."""
  hint = typing.get_type_hints(cls)[name]
  if typing.get_origin(hint) is typing.Union:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return tuple if typing.get_origin(hint) is tuple else hint


def item_kind(cls: type, name: str) -> type:
  """The item type of tuple field `name` (int or float)."""
  hint = typing.get_type_hints(cls)[name]
  if typing.get_origin(hint) is typing.Union:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return typing.get_args(hint)[0]


def coerce(cls: type, name: str, value: Any) -> Any:
  """`value` (from a flag or a JSON file) as field `name` of `cls` holds it."""
  if value is None:
    return None
  base = kind(cls, name)
  if base is tuple:
    item = item_kind(cls, name)
    items = value.split(',') if isinstance(value, str) else value
    try:
      return tuple(item(v) for v in items if v != '')
    except (TypeError, ValueError):
      fail(name, value, f'expected comma-separated {"integers" if item is int else "numbers"}')
  if base is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def names(cls: type) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def field(cls: type, name: str) -> dataclasses.Field:
  return {f.name: f for f in dataclasses.fields(cls)}[name]


def limits(f: dataclasses.Field) -> str:
  """'choose: a | b' / '> 0' / '>= 1': the declared limits, for `--help`."""
  meta = f.metadata
  parts = []
  if meta.get('choices'):
    parts.append(' | '.join(map(str, meta['choices'])))
  if meta.get('minimum') is not None:
    parts.append(f'>= {meta["minimum"]:g}')
  if meta.get('above') is not None:
    parts.append(f'> {meta["above"]:g}')
  if meta.get('maximum') is not None:
    parts.append(f'<= {meta["maximum"]:g}')
  if meta.get('item_minimum') is not None:
    parts.append(f'each >= {meta["item_minimum"]:g}')
  return ', '.join(parts)


def with_defaults(cls: type, name: str, **defaults) -> type:
  """A subclass of section `cls` named `name` with other defaults for some fields.

  The fields keep their help and limits; only the defaults change. Used by
  parts that share settings (the inner loop of the MAML family) but differ
  in their values (Reptile's five steps of 0.02).
  """
  unknown = set(defaults) - set(names(cls))
  if unknown:
    raise TypeError(f'{cls.__name__} has no settings {sorted(unknown)}')
  hints = typing.get_type_hints(cls)
  new_fields = []
  for n, value in defaults.items():
    old = field(cls, n)
    new_fields.append((n, hints[n], dataclasses.field(
        default=tuple(value) if isinstance(value, list) else value, metadata=old.metadata)))
  return dataclasses.make_dataclass(name, new_fields, bases=(cls,), frozen=True,
                                    namespace={'__doc__': cls.__doc__,
                                               '__module__': cls.__module__})


def build(cls: type, values: dict[str, Any], check: Callable[[str], None] = lambda n: None):
  """Section `cls` from `values` (name -> value, coerced); names not in it call `check`."""
  known = names(cls)
  for n in values:
    if n not in known:
      check(n)
  return cls(**{n: coerce(cls, n, v) for n, v in values.items() if n in known})
