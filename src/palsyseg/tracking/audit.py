"""The champion audit trail: a hash chain kept in registered-model tags, and its verification.

Every change of ``champion`` is an :class:`AuditEntry` stored as the tag ``audit.<seq>``
(zero-padded, canonical JSON) on the registered model. Entry ``n`` records the SHA-256 of the
exact text of entry ``n-1`` (``prev_hash``), and the tag ``audit.head`` holds ``<seq>:<hash>``
of the newest entry. So, without any server-side support:

- an entry deleted in the MLflow UI leaves a gap in the sequence (or, the newest one, a head
  that names an entry that is gone);
- an entry edited changes its hash, which its successor (or the head) no longer matches;
- the ``champion`` alias moved outside palsyseg no longer sits where the newest entry put it.

Writes go entry, then alias, then head. A writer that dies between them leaves the newest
entry *pending* (the head one behind, the alias at either end of the move); the next change
completes it instead of reporting a break (:attr:`TrailCheck.pending`).

A broken trail is mended only by a person: a ``repair`` entry names what was broken, puts
the alias back where the trail says, and seals everything before it (``prev_hash`` is then the digest of
every earlier entry's seq and hash, so an entry changed after the repair is still caught).
The champion history that ``rollback`` walks starts again at the latest repair.

This is tamper-*evident*, not tamper-proof: someone who can write the model's tags can also
recompute the hashes. It catches edits made by hand in the MLflow UI or API, and ``palsyseg
registry verify`` run from CI or cron turns them into an alert.

Pure functions on a tag mapping and the alias's version: no MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

AUDIT_PREFIX = "audit."
HEAD_KEY = "audit.head"
ENTRY_KEY = re.compile(r"^audit\.(\d{6,})$")
ACTIONS = ("promote", "rollback", "retire", "repair")
GENESIS = "0" * 64  # prev_hash of the first entry


class AuditFormatError(ValueError):
    """An ``audit.*`` tag that is not an entry palsyseg wrote."""


@dataclass(frozen=True)
class AuditEntry:
    """One change of ``champion`` (``to_version`` ``None``: no champion).

    ``overrides``: gates the reviewer overrode, each ``{gate, reason, used, production,
    detail}``; ``repaired``: for a ``repair``, the breaks it accepted; ``identity``:
    ``basic-auth`` when reviewer and trainer were users the tracking server authenticated,
    ``declared`` when they are names typed on a local store.
    """

    seq: int
    action: str
    from_version: str | None
    to_version: str | None
    reviewer: str
    reason: str
    at: str  # ISO 8601, UTC
    trained_by: str = ""
    identity: str = "declared"
    overrides: tuple[dict[str, Any], ...] = ()
    repaired: tuple[str, ...] = ()
    prev_hash: str = ""

    def to_json(self) -> str:
        """The canonical text stored in the tag (and hashed by the next entry)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> AuditEntry:
        """Parse a tag; :class:`AuditFormatError` when it is not a well-formed entry."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            data["overrides"] = tuple(dict(o) for o in data.get("overrides") or ())
            data["repaired"] = tuple(str(r) for r in data.get("repaired") or ())
            entry = cls(**data)
        except (ValueError, TypeError) as exc:
            raise AuditFormatError(str(exc)) from None
        if entry.action not in ACTIONS or not isinstance(entry.seq, int):
            raise AuditFormatError(f"unknown action {entry.action!r}")
        return entry

    @property
    def overridden_gates(self) -> list[str]:
        return [str(o.get("gate", "?")) for o in self.overrides]


def entry_key(seq: int) -> str:
    return f"{AUDIT_PREFIX}{seq:06d}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def head_value(seq: int, text: str) -> str:
    return f"{seq}:{text_hash(text)}"


def sealed_digest(raw: Mapping[int, str]) -> str:
    """What a repair entry seals: every earlier entry's seq and hash, in order."""
    lines = "\n".join(f"{seq}:{text_hash(raw[seq])}" for seq in sorted(raw))
    return text_hash(lines)


def raw_entries(tags: Mapping[str, str]) -> dict[int, str]:
    """``{seq: tag text}`` of every ``audit.<seq>`` tag."""
    found = {}
    for key, value in tags.items():
        match = ENTRY_KEY.match(key)
        if match:
            found[int(match.group(1))] = value
    return found


def champion_stack(entries: list[AuditEntry]) -> list[str | None]:
    """The champions in force, oldest first, since the latest repair.

    A promotion pushes its version, a retirement pushes ``None`` (no champion), a rollback
    pops back to the one before; a repair starts a new history at the champion it restored.
    """
    stack: list[str | None] = []
    for entry in entries:
        if entry.action == "promote":
            stack.append(entry.to_version)
        elif entry.action == "retire":
            stack.append(None)
        elif entry.action == "rollback" and stack:
            stack.pop()
        elif entry.action == "repair":
            stack = [entry.to_version]
    return stack


@dataclass(frozen=True)
class TrailCheck:
    """A verified trail: the entries that parse, what is broken, where ``champion`` should be."""

    entries: list[AuditEntry]
    raw: dict[int, str]
    alias: str | None
    problems: list[str] = field(default_factory=list)
    pending: bool = False  # the newest entry is written but its move did not finish

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def expected(self) -> str | None:
        """Where the trail puts ``champion`` (counting a pending entry as done)."""
        stack = champion_stack(self.entries)
        return stack[-1] if stack else None

    @property
    def last(self) -> AuditEntry | None:
        return self.entries[-1] if self.entries else None

    def next_seq(self) -> int:
        return max(self.raw, default=0) + 1

    def next_prev_hash(self) -> str:
        """``prev_hash`` for the next ordinary entry."""
        if not self.raw:
            return GENESIS
        return text_hash(self.raw[max(self.raw)])


def _legacy(text: str) -> bool:
    try:
        return "prev_hash" not in json.loads(text)
    except ValueError:
        return False


def verify(tags: Mapping[str, str], alias: str | None) -> TrailCheck:
    """Check the chain, the head and the alias; every break is one line in ``problems``.

    What a repair sealed is checked only as a whole (its digest); the breaks it accepted are
    not reported again.
    """
    raw = raw_entries(tags)
    entries: list[AuditEntry] = []
    unreadable: dict[int, str] = {}
    for seq in sorted(raw):
        try:
            entry = AuditEntry.from_json(raw[seq])
        except AuditFormatError as exc:
            unreadable[seq] = f"{entry_key(seq)} is not a valid entry ({exc})"
            continue
        if entry.seq != seq:
            unreadable[seq] = f"{entry_key(seq)} holds entry {entry.seq}"
            continue
        entries.append(entry)
    sealed = max((e.seq for e in entries if e.action == "repair"), default=0)
    problems = [
        f"{text}: edited outside palsyseg" for seq, text in unreadable.items() if seq > sealed
    ]
    legacy = [seq for seq in sorted(raw) if seq > sealed and _legacy(raw[seq])]
    if legacy:
        problems.append(
            f"{len(legacy)} entr{'y' if len(legacy) == 1 else 'ies'} ({entry_key(legacy[0])}"
            f"{'' if len(legacy) == 1 else ' ... ' + entry_key(legacy[-1])}) predate the hash "
            "chain (written by an older palsyseg); record a repair entry to seal them"
        )
    else:
        problems += _chain_problems(raw, entries)

    pending = False
    if raw and not legacy:
        head_problems, pending = _head(tags.get(HEAD_KEY), raw, entries, alias)
        problems += head_problems
    elif not raw and tags.get(HEAD_KEY):
        problems.append(
            f"{HEAD_KEY} names entry {tags[HEAD_KEY].split(':')[0]} but every audit entry is "
            "gone: deleted outside palsyseg"
        )
    stack = champion_stack(entries)
    expected = stack[-1] if stack else None
    if not pending and alias != expected:
        where = f"{entry_key(entries[-1].seq)} put it on " if entries else "the trail has "
        problems.append(
            f"alias champion is on {_v(alias)} but {where}{_v(expected)}: moved outside palsyseg"
        )
    return TrailCheck(entries, raw, alias, problems, pending)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no version"


def _chain_problems(raw: Mapping[int, str], entries: list[AuditEntry]) -> list[str]:
    problems: list[str] = []
    if not entries:
        return problems
    by_seq = {e.seq: e for e in entries}
    repairs = [e.seq for e in entries if e.action == "repair"]
    start = repairs[-1] if repairs else min(raw)
    if repairs:
        repair = by_seq[start]
        earlier = {s: t for s, t in raw.items() if s < start}
        if repair.prev_hash != sealed_digest(earlier):
            problems.append(
                f"entries before the repair {entry_key(start)} were edited or deleted after it "
                "sealed them"
            )
    elif start != 1:
        problems.append(
            f"{', '.join(entry_key(s) for s in range(1, start))} deleted outside palsyseg "
            "(the trail starts at " + entry_key(start) + ")"
        )
    previous = start
    for seq in sorted(s for s in raw if s > start):
        missing = range(previous + 1, seq)
        if missing:
            problems.append(
                f"{', '.join(entry_key(s) for s in missing)} deleted outside palsyseg "
                f"(the sequence jumps from {previous} to {seq})"
            )
        elif (
            seq in by_seq
            and previous in by_seq  # a malformed predecessor is reported already
            and by_seq[seq].prev_hash != text_hash(raw[previous])
        ):
            problems.append(
                f"{entry_key(previous)} was edited outside palsyseg ({entry_key(seq)} recorded "
                "another hash of it)"
            )
        previous = seq
    if start == 1 and not repairs and 1 in by_seq and by_seq[1].prev_hash != GENESIS:
        problems.append(f"{entry_key(1)} was edited outside palsyseg (not a first entry)")
    return problems


def _head(
    head: str | None, raw: Mapping[int, str], entries: list[AuditEntry], alias: str | None
) -> tuple[list[str], bool]:
    """Problems with ``audit.head``, and whether the newest entry is a pending change."""
    last_seq = max(raw)
    last_hash = text_hash(raw[last_seq])
    parsed = {e.seq: e for e in entries}
    try:
        seq_text, _, digest = (head or "").partition(":")
        head_seq = int(seq_text) if head else None
    except ValueError:
        return [f"{HEAD_KEY} is not {{seq}}:{{hash}}: edited outside palsyseg"], False
    if head_seq == last_seq:
        if digest == last_hash:
            return [], False
        return [
            f"{entry_key(last_seq)} was edited outside palsyseg ({HEAD_KEY} recorded another hash)"
        ], False
    if head_seq is not None and head_seq > last_seq:
        gone = ", ".join(entry_key(s) for s in range(last_seq + 1, head_seq + 1))
        return [f"{gone} deleted outside palsyseg ({HEAD_KEY} names entry {head_seq})"], False
    # The head one behind (or absent before the first entry): a change that died midway?
    previous = max((s for s in raw if s < last_seq), default=None)
    behind = (head is None and previous is None) or (
        head_seq == previous and previous is not None and digest == text_hash(raw[previous])
    )
    last = parsed.get(last_seq)
    if behind and last is not None and alias in (last.from_version, last.to_version):
        return [], True
    if head is None:
        return [f"{HEAD_KEY} is missing: deleted outside palsyseg"], False
    return [
        f"{HEAD_KEY} names entry {head_seq} but the trail goes on to {last_seq}: entries "
        "added outside palsyseg"
    ], False
