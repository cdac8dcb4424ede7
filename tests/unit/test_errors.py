from google.rpc import code_pb2, error_details_pb2

from services.common.errors import FieldViolation, InvalidArgument, NotFound, Violations
from services.common.grpc_errors import status_for


def test_invalid_argument_carries_one_violation_per_problem():
    violations = Violations()
    violations.add("config.topic", "must not be empty")
    violations.add("config.participants", "needs 2 to 8 participants, got 1")
    try:
        violations.raise_if_any()
    except InvalidArgument as error:
        status = status_for(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "INVALID_ARGUMENT"
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("config.topic", "must not be empty"),
        ("config.participants", "needs 2 to 8 participants, got 1"),
    ]


def test_no_violations_raises_nothing():
    Violations().raise_if_any()


def test_not_found_has_reason_and_metadata():
    status = status_for(NotFound("debate x not found", reason="DEBATE_NOT_FOUND", metadata={"debate_id": "x"}))
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert status.code == code_pb2.NOT_FOUND
    assert info.reason == "DEBATE_NOT_FOUND" and info.metadata["debate_id"] == "x"
    assert len(status.details) == 1


def test_field_violation_is_a_value():
    assert FieldViolation("a", "b") == FieldViolation("a", "b")
