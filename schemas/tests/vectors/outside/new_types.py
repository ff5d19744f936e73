"""Writes the outside vectors of the message types added after the first contract, with Python's
cbor2 (an outside CBOR library), each beside the same envelope as JSON.

    python3 -m pip install cbor2 && python3 new_types.py
"""

import json
import pathlib

import cbor2

BODIES = {
    "task.plan_submitted": ("task/t1", {"task_id": "t1", "agent_id": "a1", "plan": "1. build 2. test"}),
    "task.plan_approved": ("task/t1", {"task_id": "t1"}),
    "task.plan_rejected": ("task/t1", {"task_id": "t1", "feedback": "test first"}),
    "task.help_requested": ("task/t1", {"task_id": "t1", "agent_id": "a1", "question": "which database?"}),
    "task.answered": ("task/t1", {"task_id": "t1", "answer": "PostgreSQL"}),
    "task.review_requested": ("task/t1", {"task_id": "t1", "agent_id": "a1", "result": {"api_schema": "v2", "tests": 12}}),
    "task.approved": ("task/t1", {"task_id": "t1"}),
    "task.revision_requested": ("task/t1", {"task_id": "t1", "feedback": "add a test"}),
    "task.cancelled": ("task/t1", {"task_id": "t1", "reason": "no longer needed"}),
    "task.retried": ("task/t1", {"task_id": "t1"}),
    "task.requeued": ("task/t1", {"task_id": "t1", "agent_id": "a1", "reason": "its agent went offline"}),
    "task.dependency_added": ("task/t2", {"task_id": "t2", "dependency": {"task_id": "t1", "type": "input", "contract_key": "api_schema"}}),
    "task.dependency_resolved": ("task/t2", {"task_id": "t2", "upstream": "t1", "value": {"version": 2}}),
    "task.dependency_failed": ("task/t2", {"task_id": "t2", "upstream": "t1", "reason": "was cancelled"}),
    "task.output": ("task/t1", {"task_id": "t1", "agent_id": "a1", "lines": ["Compiling switchyard", "Finished"]}),
    "agent.offline": ("agent/a1", {"agent_id": "a1", "reason": "no heartbeat for 31000 ms"}),
    "message.received": ("conversation/slack/C024BE91L", {"channel": "slack", "conversation": "C024BE91L", "sender": "U2147483697", "text": "task: book the dentist", "provider_id": "Ev0PV52K25", "received": 1795500000000, "attachments": [{"name": "note.png", "content_type": "image/png", "size": 2048}]}),
    "calendar.book_requested": ("calendar/family", {"calendar_id": "family", "request_id": "req-1", "title": "dentist", "start": 1795500000000, "end": 1795503600000}),
    "calendar.booked": ("calendar/family", {"calendar_id": "family", "request_id": "req-1"}),
    "calendar.conflict": ("calendar/family", {"calendar_id": "family", "request_id": "req-2", "conflicts_with": "req-1"}),
    "invocation.recorded": ("costs/u1", {"invocation_id": "inv-1", "provider": "anthropic", "model": "claude-sonnet", "tokens_in": 1200, "tokens_out": 350, "cost": 0.0089, "latency_ms": 2140, "task_id": "t1"}),
    "budget.set": ("costs/u1", {"daily": 5, "monthly": 100.5}),
    "automation.defined": ("automation/nightly", {"automation_id": "nightly", "schedule": "0 2 * * *", "time_zone": "Europe/Paris", "missed": "catch_up", "tasks": [{"task_id": "build", "title": "build", "spec": "make"}, {"task_id": "deploy", "title": "deploy", "spec": "make deploy", "depends_on": [{"task_id": "build", "type": "blocks"}]}]}),
    "automation.run_requested": ("automation/nightly", {"automation_id": "nightly"}),
}

here = pathlib.Path(__file__).parent
for i, (kind, (key, body)) in enumerate(BODIES.items()):
    envelope = {
        "v": 1,
        "source": "outside/python-cbor2",
        "time": 1795500000000,
        "user": "u1",
        "corr": None,
        "cause": None,
        "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "id": f"0192f0c8-0000-7000-8000-0000000001{i:02}",
        "type": kind,
        "key": key,
        "body": body,
    }
    stem = kind.replace(".", "_")
    (here / f"{stem}.cbor").write_bytes(cbor2.dumps(envelope))
    (here / f"{stem}.json").write_text(json.dumps(envelope, indent=1))
