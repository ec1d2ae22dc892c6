"""Declared identities (a local store): one person, however the name is typed.

Also the promotion lock's view of its holder: a holder on this host whose process is gone is
dead at once, a live one is not, and one on another host is judged by age alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from palsyseg.tracking import identity, lock
from palsyseg.tracking.identity import normalise_name, same_person


@pytest.mark.parametrize(
    "typed",
    [
        "alice",
        "Alice",
        " ALICE ",
        "ali\u200bce",  # zero-width space
        "al\u00adice",  # soft hyphen
        "\u200dalice\ufeff",  # zero-width joiner, byte-order mark
        "ａｌｉｃｅ",  # fullwidth letters (NFKC)
        "alice\u202e",  # right-to-left override
    ],
)
def test_names_that_look_the_same_are_the_same_person(typed: str) -> None:
    assert normalise_name(typed) == "alice"
    assert same_person(typed, "alice")


def test_different_people_stay_different() -> None:
    assert not same_person("alice", "alicia")
    assert not same_person("", "")  # nobody is not a person
    assert normalise_name("Anna  Maria") == "anna maria"
    assert normalise_name("Straße") == "strasse"  # full case folding
    # Look-alike letters from another script are not folded: declared names are not verified.
    assert not same_person("\u0430lice", "alice")  # Cyrillic a


def test_a_local_store_takes_the_declared_name_normalised() -> None:
    who = identity.resolve(" Ali\u200bce ", "sqlite:////tmp/x.db")
    assert (who.name, who.mode, who.verified) == ("alice", "declared", False)
    with pytest.raises(identity.IdentityError, match="--reviewer: a name is required"):
        identity.resolve("\u200b ", "sqlite:////tmp/x.db")
    assert identity.require_manage(who, "sqlite:////tmp/x.db", "palsyseg", "promote") is None


def test_a_lock_holder_on_this_host_whose_process_ended_is_dead() -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    tags = lock.holder_tags("bob:1")
    assert not lock.holder_is_dead(tags)  # this very process
    tags["pid"] = ended.stdout.strip()
    tags["pid_start"] = ""
    assert lock.holder_is_dead(tags)


def test_a_reused_pid_is_a_dead_holder() -> None:
    tags = lock.holder_tags("bob:1")
    tags["pid_start"] = str(int(tags["pid_start"]) - 1)  # the holder started earlier
    assert lock.holder_is_dead(tags)


def test_a_holder_elsewhere_is_never_judged_by_pid() -> None:
    tags = lock.holder_tags("bob:1")
    tags["pid"] = str(2**22 + 12345)  # no such process here
    tags["host"] = "another-host/boot/pid:[1]"
    assert not lock.holder_is_dead(tags)
    tags.pop("host")
    assert not lock.holder_is_dead(tags)


def test_this_host_has_an_identity() -> None:
    here = lock.host_identity()
    assert here.startswith(f"{os.uname().nodename}/") and "pid:[" in here
    assert lock.process_start(os.getpid())
