"""User-facing errors.

Every mistake a user can make (unknown name, missing data, bad ``--set``, unreadable image) raises
:class:`UserError`. The CLI prints its message on one line and exits with status 2, without a
traceback. Library code raises the subclass that says which kind of input was wrong.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""

    exit_code = 2


class DataError(UserError):
    """A dataset, image or mask that is missing, malformed or unreadable."""


class SettingDoesNotFit(UserError):
    """A split setting the category's data cannot hold (Q1: more labelled anomalies than half of the
    category's anomalies). ``fits``: the setting values that would fit (``{"n_anomaly": 7}``).

    The grid resolution decides what it means (:mod:`fsad_bench.runner.generator`): a value the user
    set with ``--set`` that no category can hold is an error, a spec's value that some categories
    cannot hold makes their cells not applicable. A cell built without the resolution fails with it.
    """

    def __init__(self, message: str, fits: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.fits = dict(fits or {})


class WeightsUnavailableError(UserError):
    """Pretrained weights were requested but are not in the torch cache and cannot be downloaded."""


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss (the cell is recorded as failed, the grid goes on)."""


class SkipCell(Exception):
    """The protocol's setting cannot run on this data (too few anomalies of a class, no masks).

    The cell is stored with status 'skipped' and the reason; it is never run with a changed setting.
    """
