"""The chaos checker's rule for which till edit must win (chaos/run.py `wanted`), on
hand-made edit histories: it must fail a run that kept an older value, and must not fail
one that kept what the bridge could know to be newest."""

from __future__ import annotations

from chaos.run import Edit, overwritten_in_flight, reordered, wanted

C = "customer-1"


def edit(system: str, value: str, at: float, fld: str = "note", group: int | None = None) -> Edit:
    return Edit(customer=C, system=system, field=fld, value=value, at=at, group=group)


def test_the_last_till_edit_must_win_when_each_was_seen_at_its_own_time() -> None:
    edits = [edit("square", "a", 10.0), edit("loyverse", "b", 14.0), edit("onsite", "c", 18.0)]
    last, accept = wanted(edits, {i: e.at for i, e in enumerate(edits)})
    assert accept[(C, "note")] == {"c"}
    assert last[(C, "note")].system == "onsite"
    assert reordered(edits, {i: e.at for i, e in enumerate(edits)}) == 0


def test_an_older_value_is_not_accepted() -> None:
    edits = [edit("onsite", "old", 10.0), edit("loyverse", "new", 14.0)]
    _, accept = wanted(edits, {0: 10.0, 1: 14.0})
    assert "old" not in accept[(C, "note")]


def test_an_edit_first_seen_with_a_later_record_stamp_may_win_over_one_typed_between() -> None:
    # OnSite note at 10, Loyverse note at 14, OnSite family name at 16: a poll that first
    # saw the OnSite note together with the family name stamped the whole record 16. A
    # push reading the record back may have seen the note earlier, at 10 (no event
    # records that), so either note may win; the one typed before both may not.
    edits = [
        edit("square", "square-note", 8.0),
        edit("onsite", "onsite-note", 10.0),
        edit("loyverse", "loyverse-note", 14.0),
        edit("onsite", "Family", 16.0, fld="family_name"),
    ]
    known = {0: 8.0, 1: 16.0, 2: 14.0, 3: 16.0}
    last, accept = wanted(edits, known)
    assert accept[(C, "note")] == {"onsite-note", "loyverse-note"}
    assert accept[(C, "family_name")] == {"Family"}
    assert last[(C, "note")].system == "loyverse"
    assert reordered(edits, known) == 1


def test_a_same_second_group_accepts_either_value_but_nothing_older() -> None:
    edits = [
        edit("square", "before", 5.0),
        edit("square", "x", 10.0, group=1),
        edit("loyverse", "y", 10.2, group=1),
    ]
    _, accept = wanted(edits, {i: e.at for i, e in enumerate(edits)})
    assert accept[(C, "note")] == {"x", "y"}
    assert reordered(edits, {i: e.at for i, e in enumerate(edits)}) == 0


def test_an_unseen_edit_typed_while_our_update_was_in_flight_is_excused() -> None:
    # Loyverse: the bridge read the record at 20.00 and wrote at 20.11; the till typed
    # "lost" at 20.05 in between; the batched webhook carried our write only.
    edits = [edit("onsite", "ours", 17.0), edit("loyverse", "lost", 20.05)]
    edits[1].began = 20.04
    writes = {(C, "loyverse"): [(20.0, 20.11)]}
    assert overwritten_in_flight(edits, {1}, writes) == {1}


def test_an_edit_some_event_showed_is_never_excused() -> None:
    edits = [edit("onsite", "ours", 17.0), edit("loyverse", "seen", 20.05)]
    writes = {(C, "loyverse"): [(20.0, 20.11)]}
    assert overwritten_in_flight(edits, set(), writes) == set()


def test_an_unseen_edit_outside_any_write_of_that_record_is_still_lost() -> None:
    edits = [edit("onsite", "ours", 17.0), edit("loyverse", "dropped", 25.0)]
    writes = {
        (C, "loyverse"): [(20.0, 20.11)],  # before the edit
        (C, "square"): [(24.9, 25.2)],  # another system's record
        ("customer-2", "loyverse"): [(24.9, 25.2)],  # another customer's record
    }
    assert overwritten_in_flight(edits, {1}, writes) == set()
