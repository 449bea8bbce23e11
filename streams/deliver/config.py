"""Destination files (``destinations/*.yaml``): what ``segmenter deliver`` sends, and where.

One destination a file, validated like rule files (``file:line: message`` for every problem):

- ``webhook``: migrations as CloudEvents JSON batches, signed, retried, dead-lettered;
- ``profile_sync``: the same transport, but each customer's full current segment list;
- ``audience_file``: per segment, a full export then add/remove files of hashed identifiers.

Secrets never live in the files: ``secret_env`` names the environment variable that holds the
shared signing secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.engine.model import Kind
from streams.engine.problems import LineDict, RuleProblem, parse_yaml, validation_problems

DESTINATION_SUFFIXES = (".yaml", ".yml")
Direction = Literal["entered", "exited"]
_ID = r"^[a-z][a-z0-9_-]*$"
_BOTH: tuple[Direction, ...] = ("entered", "exited")
Identifier = Literal["email", "phone"]
_IDS: tuple[Identifier, ...] = ("email", "phone")
TriggerName = Literal["event", "time", "rule_change", "merge", "erasure", "consent", "import"]
DEFAULT_TRIGGERS: tuple[TriggerName, ...] = (
    "event",
    "time",
    "rule_change",
    "merge",
    "erasure",
    "consent",
)
"""Every trigger kind but ``import``: a history loaded by ``segmenter import`` sends nothing
(no win-back email for a lapse of years ago) unless a destination names it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Batching(_Strict):
    """How records are grouped into one request (or one file)."""

    max_records: int = Field(100, ge=1, le=10_000, description="records per batch, at most")
    linger_ms: int = Field(
        1000, ge=0, le=600_000, description="longest wait for a fuller batch (ms)"
    )


class Retry(_Strict):
    """Retries of a failed request: exponential backoff with full jitter, then dead-letter."""

    initial_backoff_s: float = Field(1.0, gt=0, le=3600)
    max_backoff_s: float = Field(300.0, gt=0, le=86_400)
    give_up_after_s: float = Field(
        13 * 3600.0, gt=0, description="after this long failing, the batch is dead-lettered"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Retry:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        return self


class _Selecting(_Strict):
    """Which migrations a destination takes."""

    id: str = Field(pattern=_ID, max_length=64, description="the destination's id")
    description: str = ""
    segments: list[str] | None = Field(
        None, description="segment ids (default: every segment, or those of `kinds`)"
    )
    kinds: list[Kind] | None = Field(None, description="segment kinds to take")
    directions: list[Direction] = Field(default_factory=lambda: list(_BOTH), min_length=1)
    triggers: list[TriggerName] = Field(
        default_factory=lambda: list(DEFAULT_TRIGGERS),
        min_length=1,
        description="trigger kinds to take (default: all but `import`)",
    )
    batch: Batching = Field(default_factory=Batching)
    start_from: Literal["latest", "earliest"] = Field(
        "latest",
        description="where a new destination starts reading: new migrations only, or all kept",
    )


class _Http(_Selecting):
    """An HTTP endpoint: signed JSON batches with retries, rate limit and a dead-letter topic."""

    url: str = Field(description="where batches are POSTed (http:// or https://)")
    secret_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the HMAC-SHA256 signing secret",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout_s: float = Field(10.0, gt=0, le=300)
    rate_limit_per_s: float = Field(10.0, gt=0, description="requests per second, at most")
    retry: Retry = Field(default_factory=Retry)
    dead_letter_topic: str | None = Field(None, description="default: segmenter.deliver.<id>.dlq")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("expected an http:// or https:// URL")
        return url


class WebhookFile(_Http):
    """``type: webhook``: every selected migration, as CloudEvents."""

    type: Literal["webhook"]


class ProfileSyncFile(_Http):
    """``type: profile_sync``: each moved customer's current segments and primary segment."""

    type: Literal["profile_sync"]


class AudienceFile(_Selecting):
    """``type: audience_file``: hashed custom-audience files per segment."""

    type: Literal["audience_file"]
    directory: Path = Field(description="where the files go (one sub-directory per segment)")
    identifiers: list[Identifier] = Field(default_factory=lambda: list(_IDS), min_length=1)
    consent: str | None = Field(
        "marketing", description="consent category a customer must have given (null: none)"
    )
    default_country_code: str = Field(
        "1", pattern=r"^[1-9][0-9]{0,2}$", description="for phone numbers without +country"
    )


DestinationFile = Annotated[
    WebhookFile | ProfileSyncFile | AudienceFile, Field(discriminator="type")
]


class _Top(BaseModel):
    """Only for error messages: the top-level fields of any destination file."""

    model_config = ConfigDict(extra="forbid")
    destination: DestinationFile


@dataclass(frozen=True)
class Destination:
    """A validated destination and the file it came from."""

    spec: WebhookFile | ProfileSyncFile | AudienceFile
    file: str

    @property
    def id(self) -> str:
        """The destination's id."""
        return self.spec.id

    def dead_letter_topic(self) -> str:
        """Where batches that could not be delivered go."""
        spec = self.spec
        if isinstance(spec, AudienceFile) or spec.dead_letter_topic is None:
            return f"segmenter.deliver.{self.id}.dlq"
        return spec.dead_letter_topic

    def secret(self) -> bytes | None:
        """The signing secret from the environment (None when the file names none)."""
        spec = self.spec
        if isinstance(spec, AudienceFile) or spec.secret_env is None:
            return None
        return os.environ[spec.secret_env].encode()


class DestinationLoadError(Exception):
    """Destination files have problems; ``problems`` lists all of them, by file and line."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _read(file: str, text: bytes) -> tuple[Destination | None, list[RuleProblem]]:
    data, problems = parse_yaml(text, file)
    if data is None:
        if not problems:
            problems.append(RuleProblem(file, 1, "empty file: expected a destination"))
        return None, problems
    if not isinstance(data, LineDict):
        return None, [*problems, RuleProblem(file, 1, "expected a mapping: one destination")]
    wrapped = LineDict({"destination": data})
    wrapped.line, wrapped.key_lines = data.line, {"destination": data.line}
    try:
        spec = _Top.model_validate(wrapped).destination
    except ValidationError as exc:
        found = validation_problems(exc, wrapped, file, _Top)
        return None, [*problems, *_plain(found, data.key_lines.get("type", data.line))]
    return (None if problems else Destination(spec, file)), problems


def _plain(problems: list[RuleProblem], type_line: int) -> list[RuleProblem]:
    """Problems in destination words (the shared YAML checker speaks of conditions)."""
    out = []
    for p in problems:
        message = re.sub(r"^destination(: |\.)", "", p.message)
        message = message.replace("unknown condition type", "unknown destination type")
        line = p.line
        if message.startswith("unknown destination type") or "needs a 'type'" in message:
            line = type_line
            if "needs a 'type'" in message:
                message = "a destination needs a 'type': webhook, profile_sync or audience_file"
        out.append(RuleProblem(p.file, line, message))
    return out


def load_destinations(directory: Path, segments: dict[str, str] | None = None) -> list[Destination]:
    """Every destination file in ``directory``, validated (a missing directory holds none).

    With ``segments`` (segment id -> kind, from the rule pack), unknown segment ids are
    problems too. Raises :class:`DestinationLoadError` listing every problem.
    """
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise DestinationLoadError([RuleProblem(str(directory), 0, "not a directory")])
    found: list[Destination] = []
    problems: list[RuleProblem] = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in DESTINATION_SUFFIXES or not path.is_file():
            continue
        destination, file_problems = _read(str(path), path.read_bytes())
        problems.extend(file_problems)
        if destination is not None:
            problems.extend(_check(destination, segments))
            found.append(destination)
    seen: dict[str, str] = {}
    for d in found:
        if d.id in seen:
            problems.append(RuleProblem(d.file, 1, f"id {d.id!r} is also used by {seen[d.id]}"))
        seen.setdefault(d.id, d.file)
    if problems:
        raise DestinationLoadError(problems)
    return found


def _check(destination: Destination, segments: dict[str, str] | None) -> list[RuleProblem]:
    spec, file = destination.spec, destination.file
    out: list[RuleProblem] = []
    if segments is not None:
        for sid in spec.segments or []:
            if sid not in segments:
                out.append(RuleProblem(file, 0, f"segments: unknown segment {sid!r}"))
    env = None if isinstance(spec, AudienceFile) else spec.secret_env
    if env is not None and not os.environ.get(env):
        out.append(RuleProblem(file, 0, f"secret_env: environment variable {env} is unset"))
    return out


def check_destinations(
    directory: Path, segments: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """``segmenter destinations check``: (exit code, lines to print)."""
    try:
        found = load_destinations(directory, segments)
    except DestinationLoadError as exc:
        return 1, [str(problem) for problem in exc.problems]
    if not found:
        return 1, [f"{directory}: no destination files (*.yaml, *.yml) found"]
    kinds = ", ".join(f"{d.id} ({d.spec.type})" for d in found)
    return 0, [f"OK: {len(found)} destinations: {kinds}"]
