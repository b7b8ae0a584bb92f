"""The SQLite store answers an unchanged document with the record it read before, and a changed
one with a fresh record: listing the same page again costs no JSON parse and no validation."""

from __future__ import annotations

from pathlib import Path

from flame_controller.store import open_store
from flame_controller.store.decoded import DecodedRecords
from flame_controller.store.records import JobRecord, TaskRecord


def _job(i: int) -> JobRecord:
    return JobRecord(
        id=f"job-{i}", name=f"job-{i}", owner="alice", design_id="d", code_version=1,
        spec={"rounds": i, "hyperparameters": {"lr": 0.1}},
    )  # fmt: skip


def test_the_same_text_gives_the_same_record_and_other_text_a_new_one() -> None:
    one, two, three = (_job(i).model_dump_json() for i in range(3))
    memo = DecodedRecords(text_bytes=len(one) + len(two) + 1)  # room for two of them
    decoded: list[str] = []

    def decode(text: str) -> JobRecord:
        decoded.append(text)
        return JobRecord.model_validate_json(text)

    first = memo.get("jobs", JobRecord, one, decode)
    assert memo.get("jobs", JobRecord, one, decode) is first
    assert decoded == [one]
    assert memo.get("jobs", JobRecord, two, decode).spec["rounds"] == 1
    memo.get("jobs", JobRecord, one, decode)  # the most recently used of the two
    memo.get("jobs", JobRecord, three, decode)  # evicts ``two``
    assert len(memo) == 2
    memo.get("jobs", JobRecord, two, decode)
    assert decoded == [one, two, three, two]


def test_a_record_of_another_model_is_never_handed_out() -> None:
    memo = DecodedRecords()
    text = _job(0).model_dump_json()
    memo.get("jobs", JobRecord, text, JobRecord.model_validate_json)
    tasks: list[str] = []

    def as_task(raw: str) -> TaskRecord:
        tasks.append(raw)
        return TaskRecord(id="t", job_id="job-0", role="trainer", index=0)

    assert isinstance(memo.get("jobs", TaskRecord, text, as_task), TaskRecord)
    assert tasks == [text]


async def test_a_listing_reuses_unchanged_records_and_shows_every_change(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'flame.db'}")
    try:
        for i in range(3):
            await store.create_job(_job(i))
        before = (await store.list_jobs(limit=10)).items
        again = (await store.list_jobs(limit=10)).items
        assert [a is b for a, b in zip(before, again, strict=True)] == [True, True, True]

        changed = await store.update_job("job-1", {"spec": {"rounds": 99}})
        after = (await store.list_jobs(limit=10)).items
        assert [j.id for j in after] == ["job-0", "job-1", "job-2"]
        assert after[0] is before[0] and after[2] is before[2]
        assert after[1] == changed and after[1].spec == {"rounds": 99}
        assert after[1].version == before[1].version + 1
        assert (await store.get_job("job-1")) == after[1]
    finally:
        await store.close()
