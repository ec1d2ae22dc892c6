"""The audit trail's hash chain on plain tag dictionaries: every break is named, none missed.

A trail is written here exactly as palsyseg writes it (entry, alias, head); then one thing is
done to it that someone could do in the MLflow UI, and :func:`audit.verify` must say what.
"""

from __future__ import annotations

import json

import pytest

from palsyseg.tracking import audit
from palsyseg.tracking.audit import AuditEntry, champion_stack


class Trail:
    """Registered-model tags plus the champion alias, changed the way palsyseg changes them."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.alias: str | None = None

    def check(self) -> audit.TrailCheck:
        return audit.verify(self.tags, self.alias)

    def write(self, action: str, to: str | None, *, finish: bool = True, **extra) -> AuditEntry:
        check = self.check()
        prev = audit.sealed_digest(check.raw) if action == "repair" else check.next_prev_hash()
        entry = AuditEntry(
            seq=check.next_seq(),
            action=action,
            from_version=check.expected,
            to_version=to,
            reviewer="rita",
            reason="because",
            at="2026-11-30T10:00:00.000+00:00",
            prev_hash=prev,
            **extra,
        )
        text = entry.to_json()
        self.tags[audit.entry_key(entry.seq)] = text
        if finish:
            self.alias = to
            self.tags[audit.HEAD_KEY] = audit.head_value(entry.seq, text)
        return entry

    def promote(self, version: str, **kw) -> AuditEntry:
        return self.write("promote", version, **kw)

    def rollback(self) -> AuditEntry:
        stack = champion_stack(self.check().entries)
        return self.write("rollback", stack[-2])

    def edit(self, seq: int, **changes) -> None:
        key = audit.entry_key(seq)
        data = json.loads(self.tags[key])
        data.update(changes)
        self.tags[key] = json.dumps(data)


@pytest.fixture
def trail() -> Trail:
    t = Trail()
    t.promote("1")
    t.promote("2")
    t.promote("3")
    return t


def test_an_untouched_trail_verifies(trail: Trail) -> None:
    check = trail.check()
    assert check.ok, check.problems
    assert not check.pending
    assert [e.to_version for e in check.entries] == ["1", "2", "3"]
    assert check.expected == "3"
    assert json.loads(trail.tags["audit.000001"])["prev_hash"] == audit.GENESIS


def test_an_empty_registry_verifies() -> None:
    check = audit.verify({}, None)
    assert check.ok and check.expected is None and check.next_seq() == 1


def test_a_deleted_middle_entry_is_named(trail: Trail) -> None:
    del trail.tags["audit.000002"]
    assert trail.check().problems == [
        "audit.000002 deleted outside palsyseg (the sequence jumps from 1 to 3)"
    ]


def test_a_deleted_first_entry_is_named(trail: Trail) -> None:
    del trail.tags["audit.000001"]
    assert trail.check().problems == [
        "audit.000001 deleted outside palsyseg (the trail starts at audit.000002)"
    ]


def test_the_deleted_newest_entry_is_named_by_the_head(trail: Trail) -> None:
    del trail.tags["audit.000003"]
    trail.alias = "2"  # even with the alias put back where the shortened trail says
    assert trail.check().problems == [
        "audit.000003 deleted outside palsyseg (audit.head names entry 3)"
    ]


def test_an_edited_entry_is_named_by_its_successor(trail: Trail) -> None:
    trail.edit(2, reviewer="mallory")
    assert trail.check().problems == [
        "audit.000002 was edited outside palsyseg (audit.000003 recorded another hash of it)"
    ]


def test_an_edited_newest_entry_is_named_by_the_head(trail: Trail) -> None:
    trail.edit(3, reason="no reason")
    assert trail.check().problems == [
        "audit.000003 was edited outside palsyseg (audit.head recorded another hash)"
    ]


def test_an_entry_that_is_not_json_is_named(trail: Trail) -> None:
    trail.tags["audit.000002"] = "{oops"
    problems = trail.check().problems
    assert problems[0].startswith("audit.000002 is not a valid entry")
    assert problems[0].endswith("edited outside palsyseg")
    assert len(problems) == 1


def test_a_moved_alias_is_named(trail: Trail) -> None:
    trail.alias = "1"
    assert trail.check().problems == [
        "alias champion is on v1 but audit.000003 put it on v3: moved outside palsyseg"
    ]
    trail.alias = None
    assert "alias champion is on no version" in trail.check().problems[0]


def test_a_deleted_head_is_named(trail: Trail) -> None:
    del trail.tags[audit.HEAD_KEY]
    assert trail.check().problems == ["audit.head is missing: deleted outside palsyseg"]


def test_a_change_that_died_midway_is_pending_not_broken(trail: Trail) -> None:
    trail.promote("4", finish=False)  # entry written; alias and head not
    check = trail.check()
    assert check.ok and check.pending
    assert check.expected == "4"
    trail.alias = "4"  # died after moving the alias, before the head
    assert trail.check().pending and trail.check().ok
    trail.alias = "1"
    assert not trail.check().ok


def test_a_first_promotion_that_died_midway_is_pending() -> None:
    t = Trail()
    t.promote("1", finish=False)
    check = t.check()
    assert check.ok and check.pending and check.expected == "1"


def test_entries_written_before_the_chain_are_reported_once() -> None:
    t = Trail()
    for seq, version in ((1, "1"), (2, "2")):
        data = {
            "seq": seq,
            "action": "promote",
            "from_version": None if seq == 1 else "1",
            "to_version": version,
            "reviewer": "bob",
            "reason": "old",
            "at": "2026-01-01T00:00:00+00:00",
            "trained_by": "alice",
        }
        t.tags[audit.entry_key(seq)] = json.dumps(data)
    t.alias = "2"
    check = t.check()
    assert check.problems == [
        "2 entries (audit.000001 ... audit.000002) predate the hash chain (written by an older "
        "palsyseg); record a repair entry to seal them"
    ]
    assert check.expected == "2"


def test_a_repair_records_the_breaks_and_seals_what_came_before(trail: Trail) -> None:
    del trail.tags["audit.000002"]
    trail.alias = "1"  # and someone moved the alias
    broken = trail.check()
    assert len(broken.problems) == 2
    assert broken.expected == "3"  # the entries that remain still say v3
    repair = trail.write("repair", broken.expected, repaired=tuple(broken.problems))
    check = trail.check()
    assert check.ok, check.problems
    assert check.expected == "3" == trail.alias and repair.seq == 4
    assert champion_stack(check.entries) == ["3"]  # rollback does not cross a repair
    trail.promote("5")
    assert trail.check().ok

    # Changing what the repair sealed is caught, though those entries were broken before.
    trail.edit(1, reviewer="mallory")
    assert trail.check().problems == [
        "entries before the repair audit.000004 were edited or deleted after it sealed them"
    ]


def test_the_champion_stack_follows_promote_rollback_retire_and_repair() -> None:
    def entry(seq: int, action: str, to: str | None) -> AuditEntry:
        return AuditEntry(seq, action, None, to, "r", "x", "t")

    entries = [entry(1, "promote", "1"), entry(2, "promote", "2"), entry(3, "rollback", "1")]
    assert champion_stack(entries) == ["1"]
    entries.append(entry(4, "retire", None))
    assert champion_stack(entries) == ["1", None]
    entries.append(entry(5, "rollback", "1"))
    assert champion_stack(entries) == ["1"]
    entries.append(entry(6, "repair", "7"))
    assert champion_stack(entries) == ["7"]


def test_retiring_the_first_champion_verifies() -> None:
    t = Trail()
    t.promote("1")
    t.write("retire", None)
    check = t.check()
    assert check.ok and check.expected is None and t.alias is None
    t.rollback()
    assert t.check().ok and t.check().expected == "1"


def test_entries_round_trip_with_overrides() -> None:
    entry = AuditEntry(
        1,
        "promote",
        None,
        "3",
        "bob",
        "why",
        "t",
        overrides=({"gate": "beats_baselines", "reason": "speed"},),
        prev_hash=audit.GENESIS,
    )
    again = AuditEntry.from_json(entry.to_json())
    assert again == entry
    assert again.overridden_gates == ["beats_baselines"]
    with pytest.raises(audit.AuditFormatError):
        AuditEntry.from_json('{"seq": 1, "action": "steal"}')
