"""Progress lines are machine-readable, rate-limited, and cancellation lands at the next step."""
import io

import pytest

from engine.progress import Cancelled, Progress, parse_line


def test_lines_mode_round_trip():
    buf = io.StringIO()
    seen = []
    p = Progress(mode="lines", stream=buf, min_interval_s=0.0,
                 callback=lambda *a: seen.append(a))
    with p.stage("track", total=4) as st:
        for _ in range(4):
            st.advance()
    p.message("using CPU")
    recs = [parse_line(ln) for ln in buf.getvalue().splitlines()]
    assert all(r is not None for r in recs)
    stages = [r for r in recs if "stage" in r]
    assert stages[0]["done"] == 0 and stages[-1]["done"] == 4 and stages[-1]["fraction"] == 1.0
    assert stages[-1]["eta_s"] == 0.0
    assert recs[-1] == {"message": "using CPU"}
    assert seen[-1][:3] == ("track", 4, 4)
    assert parse_line("some other output") is None
    assert parse_line("WT-PROGRESS {broken") is None


def test_rate_limit_and_quiet():
    buf = io.StringIO()
    p = Progress(mode="lines", stream=buf, min_interval_s=3600)
    with p.stage("solve", total=1000) as st:
        for _ in range(1000):
            st.advance()
    assert len(buf.getvalue().splitlines()) == 2  # the forced first and last lines only
    q = io.StringIO()
    with Progress(mode="quiet", stream=q).stage("x", 3) as st:
        st.advance(3)
    assert q.getvalue() == ""


def test_cancel_raises_at_next_advance():
    p = Progress(mode="quiet")
    with pytest.raises(Cancelled):
        with p.stage("track", total=10) as st:
            st.advance()
            p.cancel()
            st.advance()
            pytest.fail("advance after cancel must raise")


def test_bar_mode_on_tty_like_stream():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    p = Progress(mode="auto", stream=s, min_interval_s=0.0)
    assert p.mode == "bar"
    with p.stage("track", total=2) as st:
        st.advance(2)
    assert "ETA" in s.getvalue() and "2/2" in s.getvalue()
    with pytest.raises(ValueError):
        Progress(mode="fancy")


def test_stage_of_without_progress_is_silent():
    from engine.progress import NullStage, Stage, stage_of

    with stage_of(None, "lift", 3) as st:
        assert isinstance(st, NullStage)
        st.advance(2)
        st.total += 1
    assert st.done == 2 and st.total == 4
    assert isinstance(stage_of(Progress(mode="quiet"), "lift", 3), Stage)
