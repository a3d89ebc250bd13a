"""The benchmark harness runs end to end on a tiny corpus (speed is not asserted here)."""

from benchmarks.__main__ import CASES, main


def test_quick_harness_produces_a_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    rows = main(["--quick", "--n", "40", "--out", str(out)])
    assert {row["case"] for row in rows} == set(CASES)
    assert all(row["rate"] > 0 and row["ratio"] > 0 for row in rows)
    text = out.read_text()
    assert "| case | measure | rate | ratio | target | peak RSS |" in text
    assert text.count("\n| ") == len(rows) + 1
