"""The hash-chained log: intact logs verify, any edit, removal or reordering shows."""

import json

from meddiffusion.study import log


def write_log(path, count=4):
    for number in range(count):
        log.append(path, {"reader": "R1", "type": "answer", "read": number, "question": "noise", "answer": 3})
    return path


def test_an_intact_log_verifies(tmp_path):
    path = write_log(tmp_path / "R1.jsonl")
    records = log.read(path)
    assert [r["seq"] for r in records] == [0, 1, 2, 3] and log.verify(path) == []
    assert records[0]["prev"] == log.GENESIS and records[1]["prev"] == records[0]["hash"]
    assert records[0]["time"].endswith("Z")


def test_changing_an_answer_in_the_file_breaks_the_chain(tmp_path):
    path = write_log(tmp_path / "R1.jsonl")
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"answer":3', '"answer":5')
    path.write_text("\n".join(lines) + "\n")
    assert any("record 1" in p and "hash" in p for p in log.verify(path))


def test_removing_or_reordering_lines_breaks_the_chain(tmp_path):
    path = write_log(tmp_path / "R1.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[3]]) + "\n")
    assert any("removed" in p for p in log.verify(path))
    path.write_text("\n".join([lines[1], lines[0], lines[2], lines[3]]) + "\n")
    assert log.verify(path)


def test_a_rehashed_forgery_still_breaks_the_following_link(tmp_path):
    path = write_log(tmp_path / "R1.jsonl")
    records = log.read(path)
    records[1]["answer"] = 5
    records[1]["hash"] = log.record_hash(records[1]["prev"], records[1])
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert any("record 2" in p and "chain" in p for p in log.verify(path))


def test_a_line_cut_short_by_a_crash_is_ignored_then_replaced(tmp_path):
    path = write_log(tmp_path / "R1.jsonl", count=2)
    with open(path, "a") as handle:
        handle.write('{"seq": 2, "answ')
    assert len(log.read(path)) == 2
    assert any("incomplete" in p for p in log.verify(path))
    log.append(path, {"reader": "R1", "type": "answer", "read": 2, "question": "noise", "answer": 1})
    assert [r["seq"] for r in log.read(path)] == [0, 1, 2] and log.verify(path) == []
