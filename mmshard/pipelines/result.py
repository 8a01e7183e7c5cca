"""What every batch job returns, and the one convention every job entry point follows.

Convention (ingest, extract_clips, tokenize/embed, mine, fit_codebook, train_vq)::

    result = job(<inputs>, <out>, config=None, *, executor=None, progress=False,
                 overwrite=False, storage_options=None)

- ``config`` is ONE frozen dataclass (``IngestConfig``, ``ClipsConfig``,
  ``TokenizeConfig``, ``MineConfig``, ``FitCodebookConfig``, ``TrainVQConfig``) holding
  everything that decides the output bytes; it validates itself in ``__post_init__``
  and round-trips through ``to_dict``/``from_dict`` (the ``--config FILE.yaml`` of the CLI).
- Execution choices (executor, progress bar, overwrite, storage options) are keywords,
  never part of the config, so they never change the job's fingerprint.
- The result is a :class:`JobResult`: ``out`` (where the job wrote) and ``stats`` (what
  its stats/summary JSON holds), plus job-specific conveniences in the subclasses.

>>> r = JobResult(out="ds", stats={"ok": 3, "failed": 1, "failure_rate": 0.25})
>>> r.failure_rate
0.25
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import JobError

__all__ = ["FailureRateError", "JobResult", "check_failure_rate"]


@dataclass(frozen=True)
class JobResult:
    """A finished job: where it wrote, and its stats (the content of its stats JSON)."""

    out: str
    stats: dict[str, Any]

    @property
    def failure_rate(self) -> float:
        return float(self.stats.get("failure_rate", 0.0))


class FailureRateError(JobError):
    """Raised after commit when the failure rate is above ``max_failure_rate``; the
    committed job's result is in ``.result`` (the CLI exits 3)."""

    def __init__(self, message: str, result: JobResult) -> None:
        super().__init__(message)
        self.result = result


def check_failure_rate(result: JobResult, max_rate: float, ledger: str, *,
                       unit: str = "inputs") -> None:
    """Raise FailureRateError (after the commit: ``result`` is kept in it) when the job's
    failure rate is above ``max_rate``; the message names the counts, the reasons and
    the ``ledger`` to read.

    >>> check_failure_rate(JobResult(out="ds", stats={"failure_rate": 0.1}), 0.5, "l")
    """
    if result.failure_rate <= max_rate:
        return
    st = result.stats
    raise FailureRateError(
        f"{st['failed']} of {st['inputs']} {unit} failed "
        f"({result.failure_rate:.1%} > max_failure_rate {max_rate:.1%}); "
        f"reasons: {st['failures_by_reason']}; see {ledger}", result)
