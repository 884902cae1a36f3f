"""A registry of named specs: what `algorithms.ALGORITHMS` and `data.DATASETS` are."""

from typing import Any


class Registry(dict):
  """`{name: spec}`, filled by `register(spec)` from the module that defines each spec.

  Errors name the argument: `register` refuses a second spec of a name, `lookup`
  an unknown name (listing the known ones).
  """

  def __init__(self, kind: str):
    super().__init__()
    self.kind = kind

  def register(self, spec: Any) -> Any:
    if spec.name in self:
      raise ValueError(f'name={spec.name!r}: {self.kind} of that name is registered already')
    self[spec.name] = spec
    return spec

  def lookup(self, name: str) -> Any:
    if name not in self:
      raise ValueError(f'{self.kind}={name!r}: choose one of {", ".join(self)}')
    return self[name]
