"""``benchmarks/listing_steps.py``: the count's steps and the copy from ten lines up, on answers
written here with known mistakes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("listing_steps", ROOT / "benchmarks/listing_steps.py")
listing_steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(listing_steps)


def lines(values: list[int]) -> str:
    return "\n".join(f"{v}: words" for v in values)


def test_a_right_count_has_every_step_and_no_wrong_step():
    ref = list(range(334, 306, -1))
    first, steps, right, late_wrong, copied = listing_steps.step_facts(
        listing_steps.numbers(lines(ref)), ref
    )
    assert (first, steps, right, late_wrong, copied) == (True, 27, 27, 0, 0)


def test_a_copy_from_ten_lines_up_is_told_from_a_wrong_step():
    ref = list(range(334, 306, -1))
    head = [334, 333, 333, 333, 330, 339, 338, 338, 338, 335]  # no borrow, repeated lines
    copied_down = head * 2 + head[:8]  # every later line the one ten lines up
    _, _, right, late_wrong, copied = listing_steps.step_facts(
        listing_steps.numbers(lines(copied_down)), ref
    )
    assert late_wrong > 0 and copied == late_wrong and right < 27
    slipped = ref[:15] + [ref[14]] + ref[15:27]  # a line written twice, then counting on
    _, _, right, late_wrong, copied = listing_steps.step_facts(
        listing_steps.numbers(lines(slipped)), ref
    )
    assert right == 26 and late_wrong == 1 and copied == 0


def test_steps_across_a_ten_are_told_from_the_rest():
    ref = list(range(334, 306, -1))  # crosses a ten after 330, 320 and 310
    missed = ref[:5] + [v + 10 for v in ref[5:]]  # 330 then 339: the borrow missed, then right
    got = listing_steps.crossing_steps(listing_steps.numbers(lines(missed)), ref)
    assert (got["cross"], got["cross_right"], got["rest"], got["rest_right"]) == (3, 2, 24, 24)
    assert (got["tens_kept"], got["tens_other_way"], got["other_way"]) == (1, 0, 0)
    wrong_way = ref[:5] + [v + 20 for v in ref[5:8]] + [341, 342]  # 330, 349, 348, 347, 341, 342
    got = listing_steps.crossing_steps(listing_steps.numbers(lines(wrong_way)), ref)
    assert (got["cross"], got["cross_right"]) == (1, 0)
    assert (got["tens_other_way"], got["tens_kept"]) == (1, 0)
    assert got["other_way"] == 1 and got["rest"] == 8 and got["rest_right"] == 6
