"""Typed errors that carry the file, row and rule they are about.

The CLI turns each :class:`Problem` into one line on stderr and exits non-zero; library code
raises, never prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (file, optional 1-based line/row, optional column) and what."""

    file: str
    rule: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        if self.column:
            where = f"{where}: {self.column}"
        return f"{where}: {self.rule}"


class PalsysegError(Exception):
    """Base for errors a user can act on; ``str()`` is one line per problem.

    Build it from one :class:`Problem`, several, or a plain one-line message that already
    names the file and the rule.
    """

    def __init__(self, problems: Problem | Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            self.problems: list[Problem] = []
            text = problems
        else:
            self.problems = [problems] if isinstance(problems, Problem) else list(problems)
            text = "\n".join(str(p) for p in self.problems)
        super().__init__(text)

    def lines(self) -> list[str]:
        """The message as one line per problem, for the CLI."""
        return [str(p) for p in self.problems] or str(self).splitlines() or [type(self).__name__]


class DatasetError(PalsysegError):
    """A dataset breaks the contract (manifest, paths, image or mask content)."""


class ConfigError(PalsysegError):
    """A configuration file or value is invalid."""


class GateError(PalsysegError):
    """A promotion gate or registry rule refuses an action."""
