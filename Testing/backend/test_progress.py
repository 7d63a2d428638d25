"""meddiffusion.progress: event stream contents, ETA, and cancellation."""

import io
import json
import os
import signal

import pytest

from meddiffusion.progress import BarSink, Cancelled, JsonlSink, Progress, cancellation_signals


def events(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_jsonl_stage_reports_every_field_and_ends_at_total():
    out = io.StringIO()
    progress = Progress(JsonlSink(out), min_interval_s=0)
    with progress.stage("denoise", total=4) as step:
        for _ in range(4):
            step(message="slice")
    progress.result(output="x.nrrd")
    evs = events(out)
    assert evs[0] == {"event": "progress", "stage": "denoise", "done": 0, "total": 4, "eta_s": None, "message": ""}
    assert [e["done"] for e in evs[:-1]] == [0, 1, 2, 3, 4]
    assert all(e["eta_s"] is not None and e["eta_s"] >= 0 for e in evs[1:-1])
    assert evs[-2]["eta_s"] == 0
    assert evs[-1] == {"event": "result", "output": "x.nrrd"}


def test_throttling_keeps_the_final_event():
    out = io.StringIO()
    progress = Progress(JsonlSink(out), min_interval_s=60)
    with progress.stage("s", total=100) as step:
        for _ in range(100):
            step()
    dones = [e["done"] for e in events(out)]
    assert dones == [0, 100]


def test_cancel_raises_at_the_next_step():
    progress = Progress()
    done = []
    with pytest.raises(Cancelled):
        with progress.stage("s", total=10) as step:
            for i in range(10):
                if i == 3:
                    progress.cancel()
                step()
                done.append(i)
    assert done == [0, 1, 2]


def test_callback_checks_cancellation_and_reports():
    out = io.StringIO()
    progress = Progress(JsonlSink(out), min_interval_s=0)
    cb = progress.callback("sample", total=3)
    cb(1, 3)
    progress.cancel()
    with pytest.raises(Cancelled):
        cb(2, 3)
    assert events(out) == [{"event": "progress", "stage": "sample", "done": 1, "total": 3,
                            "eta_s": events(out)[0]["eta_s"], "message": ""}]


def test_sigterm_becomes_cancellation():
    progress = Progress()
    with cancellation_signals(progress):
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Cancelled):
            progress.check()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_bar_sink_prints_errors_and_logs():
    err = io.StringIO()
    progress = Progress(BarSink(err), min_interval_s=0)
    with progress.stage("work", total=2) as step:
        step()
        step()
    progress.log("hello")
    progress.error("bad input: expected CT")
    text = err.getvalue()
    assert "work" in text and "hello" in text and "error: bad input: expected CT" in text
