"""Progress bars: on a terminal only, with the count done of the total and the rate."""

import io
import re

from rich.console import Console

import pipeline.core.console as console_module


def rendered(monkeypatch, *args, **kwargs) -> tuple[list, str]:
    monkeypatch.setattr(console_module, "console", Console(file=io.StringIO(), force_terminal=True, width=120))
    items = list(console_module.progress(*args, **kwargs))
    return items, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", console_module.console.file.getvalue())


def test_progress_shows_count_and_rate(monkeypatch):
    items, text = rendered(monkeypatch, range(7), "Generating images", total=7)
    assert items == list(range(7))
    assert "Generating images" in text and "7/7" in text and "100%" in text
    assert re.search(r"\d[\d,.]*/s", text)  # items per second


def test_progress_of_bytes_shows_sizes(monkeypatch):
    chunks = [b"x" * 64_000] * 4
    items, text = rendered(monkeypatch, iter(chunks), "Downloading archive.zip", total=256_000, size=len)
    assert items == chunks
    assert "256.0/256.0 kB" in text and re.search(r"(kB|MB|GB)/s", text)


def test_no_bar_off_a_terminal(monkeypatch):
    monkeypatch.setattr(console_module, "console", Console(file=io.StringIO(), force_terminal=False))
    assert list(console_module.progress(range(3), "Reading headers")) == [0, 1, 2]
    assert console_module.console.file.getvalue() == ""


def _advance_three(task: int) -> bool:
    from pipeline.core.console import advance

    return advance(3)


def test_pool_workers_count_into_their_parents_bar_as_they_go(monkeypatch):
    """A local pool's workers advance their parent's counter, which its bar polls: a shard's 10,000
    URLs move the bar one by one, and the parent knows not to count them again."""
    import multiprocessing

    from pipeline.core.console import shared_counter
    from pipeline.core.engine import Engine, EngineParams

    counter = shared_counter(multiprocessing.get_context("forkserver"))
    before = counter.value
    monkeypatch.setattr(console_module, "console", Console(file=io.StringIO(), force_terminal=True, width=120))
    with Engine(EngineParams(workers=2)) as engine, console_module.bar("Fetching", 12):
        counted = list(engine.map(_advance_three, range(4)))
    assert counted == [True] * 4 and counter.value - before == 12
    assert "12/12" in console_module.console.file.getvalue()
