"""The delivery journal (journal.py): what a killed worker's restarted container finds of the deliveries its
`attempted` events did not get onto the stream in time."""

import os
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.journal import DeliveryJournal


def result(
    recipient: str, outcome: "message_pb2.Outcome.ValueType" = message_pb2.OUTCOME_DELIVERED
) -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(
        recipient=recipient, outcome=outcome, smtp_code=250, status="2.0.0", diagnostic="250 ok", remote_mta="mx1"
    )


def test_delivered_recipients_are_found_by_job_and_survive_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = DeliveryJournal(path)
    journal.record("Q1.a.example", [result("a@a.example"), result("b@a.example", message_pb2.OUTCOME_TEMPORARY)])
    journal.record("Q1.b.example", [result("c@b.example")])
    journal.record("Q1.c.example", [result("d@c.example", message_pb2.OUTCOME_PERMANENT)])  # nothing delivered
    journal.close()  # the process is gone; the file is not
    again = DeliveryJournal(path)
    assert list(again.delivered("Q1.a.example")) == ["a@a.example"]
    assert again.delivered("Q1.a.example")["a@a.example"] == result("a@a.example")
    assert list(again.delivered("Q1.b.example")) == ["c@b.example"]
    assert again.delivered("Q1.c.example") == {}
    assert again.delivered("Q1.a") == {}  # a job id is matched whole, not as a prefix
    assert path.read_bytes().count(b"\n") == 2


def test_the_journal_is_bounded_and_keeps_the_previous_file(tmp_path: Path) -> None:
    journal = DeliveryJournal(tmp_path / "journal", max_bytes=300)
    for number in range(20):
        journal.record(f"Q{number}.example", [result(f"r{number}@example.org")])
    assert (tmp_path / "journal").stat().st_size <= 300 + 200
    assert (tmp_path / "journal.1").exists()
    assert list(journal.delivered("Q19.example")) == ["r19@example.org"]
    assert journal.delivered("Q0.example") == {}  # rotated out twice: gone, the tracker answers for it


def test_lines_it_cannot_read_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = DeliveryJournal(path)
    journal.record("Q1.example", [result("a@example.org")])
    with path.open("ab") as file:
        file.write(b'{"job": "Q1.example", "delivered": [["x"]]}\n{"job": "Q1.example"\n\xff\xfe\n')
    journal.record("Q1.example", [result("b@example.org")])
    assert sorted(journal.delivered("Q1.example")) == ["a@example.org", "b@example.org"]


def test_an_unwritable_journal_costs_the_protection_not_the_delivery(tmp_path: Path) -> None:
    journal = DeliveryJournal(tmp_path / "journal")
    os.close(journal._fd)  # the file descriptor is gone (e.g. the disk failed)
    journal.record("Q1.example", [result("a@example.org")])  # logs, never raises
    journal._fd = os.open(os.devnull, os.O_WRONLY)
    journal.close()


@settings(max_examples=50, deadline=None)
@given(
    job_id=st.text(min_size=1, max_size=60),
    recipients=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4, unique=True),
)
def test_hostile_ids_and_addresses_are_written_and_read_back_as_given(
    tmp_path_factory, job_id: str, recipients: list[str]
) -> None:
    assume(job_id != "other")
    journal = DeliveryJournal(tmp_path_factory.mktemp("journal") / "journal")
    journal.record("other", [result("z@example.org")])
    journal.record(job_id, [result(rcpt) for rcpt in recipients])
    assert sorted(journal.delivered(job_id)) == sorted(recipients)
    journal.close()
