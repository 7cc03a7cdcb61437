"""The msgpack codec: round trips and every kind of rejection."""

from __future__ import annotations

import msgpack
import pytest

from agentir.bus import codec
from agentir.bus.blobs import BlobRef
from agentir.bus.errors import MalformedMessage, MessageTooLarge, UnknownMessageKind, UnsupportedVersion
from agentir.bus.messages import Candidate, ExecuteStep, JobFinished, JobSubmitted, Reflected
from agentir.bus.schema import REGISTRY, UPGRADES, Message, message

REF = BlobRef(sha256="ab" * 32, shape=(8, 9, 3), dtype="uint8")


def _raw(**overrides):
    env = {
        "k": "job.submitted",
        "v": 1,
        "id": "x",
        "cid": None,
        "cause": None,
        "src": "t",
        "ts": 1.0,
        "rt": None,
        "b": {"job": "j1", "image": {"sha256": "ab" * 32, "shape": [8, 9, 3], "dtype": "uint8"}},
    }
    env.update(overrides)
    return msgpack.packb(env, use_bin_type=True)


@pytest.mark.parametrize(
    "msg",
    [
        JobSubmitted(job="j1", image=REF, policy="random", options={"max_tool_calls": 5, "nested": {"a": [1, 2]}}),
        ExecuteStep(
            job="j",
            node=3,
            subtask="noise",
            image=REF,
            tools=["a", "b"],
            remaining=["c"],
            prior=[Candidate(tool="z", image=REF, level="high", score=2.5, seconds=0.1)],
        ),
        Reflected(job="j", node=0, subtask="haze", candidates=[Candidate(tool="t", error="boom")], verdict="failure", best=-1),
        JobFinished(job="j", result=REF, trace={"steps": [{"tool": "x", "seconds": 0.5}], "rollbacks": 1}),
    ],
)
def test_round_trip_preserves_message_and_types(msg):
    """Encoding then decoding gives an equal message with tuples, records and BlobRefs rebuilt."""
    env = codec.decode(codec.encode(msg, correlation_id="c1", source="s"))
    assert env.message == msg
    assert type(env.message) is type(msg)
    assert env.correlation_id == "c1" and env.source == "s" and env.kind == msg.KIND


def test_defaults_fill_missing_optional_fields():
    """A body without defaulted fields decodes with the defaults (older senders stay readable)."""
    env = codec.decode(_raw())
    assert env.message == JobSubmitted(job="j1", image=REF)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    """A newer sender's extra field does not break an older reader."""
    data = _raw(b={"job": "j1", "image": {"sha256": "ab" * 32, "shape": [8, 9, 3], "dtype": "uint8"}, "future": 1})
    assert codec.decode(data).message.job == "j1"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc1\xc1garbage", MalformedMessage),
        (msgpack.packb([1, 2, 3]), MalformedMessage),
        (msgpack.packb({"k": "job.submitted"}), MalformedMessage),
        (_raw(k="no.such.kind"), UnknownMessageKind),
        (_raw(v=99), UnsupportedVersion),
        (_raw(v=0), UnsupportedVersion),
        (_raw(b={"job": 5, "image": {}}), MalformedMessage),
        (_raw(b={"job": "j"}), MalformedMessage),
        (_raw(b={"job": "j", "image": {"sha256": "x", "shape": "bad", "dtype": "uint8"}}), MalformedMessage),
        (_raw(v=True), MalformedMessage),
    ],
)
def test_bad_input_is_rejected_with_a_codec_error(data, error):
    """Malformed bytes, unknown kinds, bad versions and ill-typed bodies raise their own error, never crash."""
    with pytest.raises(error):
        codec.decode(data)


def test_oversized_messages_are_rejected_on_both_sides():
    """A message over the limit is refused when encoding and when decoding, naming size and limit."""
    big = JobFinished(job="j", result=REF, trace={"blob": "x" * 5000})
    with pytest.raises(MessageTooLarge) as info:
        codec.encode(big, max_bytes=1000)
    assert info.value.limit == 1000 and info.value.size > 1000
    with pytest.raises(MessageTooLarge):
        codec.decode(codec.encode(big), max_bytes=1000)


def test_unregistered_objects_cannot_be_encoded():
    """Only registered message kinds go on the wire."""
    with pytest.raises(TypeError):
        codec.encode(object())  # type: ignore[arg-type]  # deliberate: not a message, to test the TypeError


def test_duplicate_kind_fails_at_definition():
    """Two schemas may not share a kind."""
    with pytest.raises(ValueError, match="registered twice"):

        @message("job.submitted")
        class Again(Message):
            job: str


def test_older_versions_are_upgraded(monkeypatch):
    """A body of an older version passes through the registered upgrade functions."""

    @message("test.evolving", version=2)
    class Evolving(Message):
        name: str

    try:
        UPGRADES[("test.evolving", 1)] = lambda body: {"name": body.pop("old_name")}
        data = msgpack.packb({"k": "test.evolving", "v": 1, "id": "i", "b": {"old_name": "n"}})
        assert codec.decode(data).message == Evolving(name="n")
    finally:
        REGISTRY.pop("test.evolving", None)
        UPGRADES.pop(("test.evolving", 1), None)
