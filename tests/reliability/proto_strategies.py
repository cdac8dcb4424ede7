"""Hypothesis strategies that build any protobuf message from its descriptor, with hostile values.

Strings include empty, whitespace-only, control, zero-width and bidirectional characters,
path- and SQL-looking text and huge values; numbers span the whole range of their type;
enums take unknown values; repeated fields are sometimes long; bytes are random; nested
messages recurse a few levels. `from_random_bytes` parses random bytes as the message
wherever that parses (unknown fields included).
"""

from __future__ import annotations

from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

HUGE = 300_000  # characters: well past every sane topic/persona limit, under the 16 MiB message limit

NASTY_TEXT = [
    "",
    " ",
    "\t\n",
    "\x00",
    "\x00abc",
    "a\x1b[31mb",
    "\u200b",
    "\u202etxet",
    "\ufeff",
    "\U0001f600" * 3,
    "../../etc/passwd",
    "debates/../../x",
    "' OR 1=1 --",
    "%s%s%n",
    "{}",
    "null",
    "-1",
    "0",
    "NaN",
    "1e309",
    # money strings the one parser refuses (services/common/money.py): exponents, huge, tiny,
    # underscores, signs, whitespace
    "1e61",
    "1E+2",
    "1" * 40,
    "0.0000000000001",
    "1_000",
    "+1",
    "-0",
    " 1.5 ",
    "Infinity",
    "sim/../openai/gpt-4o",
    "http://127.0.0.1:1/v1",
    "a" * 1025,
    "x" * 70_000,
]

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def text_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY_TEXT),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
        st.builds(lambda n, c: c * n, st.integers(1_000, HUGE), st.sampled_from(["a", "é", "\u200b", " "])),
    )


def _int_values(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({lo, hi, 0, -1 if lo < 0 else 0, 1, 2, 7, 100, 10**6, min(hi, 2**31 - 1)})
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]), st.integers(lo, hi))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind in _INT_RANGES:
        return _int_values(*_INT_RANGES[kind])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        width = 32 if kind == FieldDescriptor.TYPE_FLOAT else 64
        return st.one_of(
            st.sampled_from([0.0, -1.0, 1e308 if width == 64 else 3e38, float("nan"), float("inf")]),
            st.floats(width=width),
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return text_values()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=256)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    raise TypeError(f"unexpected field type {kind} for {field.full_name}")


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    if _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalar(key_field), _single(value_field, depth), max_size=4)
    if _is_repeated(field):
        one = _single(field, depth)
        return st.one_of(st.lists(one, max_size=4), st.lists(one, min_size=50, max_size=120))
    return _single(field, depth)


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


def _assign(msg: pb_message.Message, field: FieldDescriptor, value) -> None:
    target = getattr(msg, field.name)
    if _is_map(field):
        value_is_message = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
        for key, item in value.items():
            if value_is_message:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif _is_repeated(field):
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


MAX_DEPTH = 4


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[pb_message.Message]:
    """Messages of `descriptor`'s type with any subset of fields set to hostile values."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    fields = {f.name: f for f in descriptor.fields}

    def build(values: dict) -> pb_message.Message:
        msg = cls()
        for name, value in values.items():
            _assign(msg, fields[name], value)
        return msg

    return st.deferred(
        lambda: st.fixed_dictionaries({}, optional={name: _field_value(f, depth) for name, f in fields.items()}).map(
            build
        )
    )


def from_random_bytes(descriptor: Descriptor) -> st.SearchStrategy[pb_message.Message]:
    """Random bytes parsed as the message, where they parse."""
    cls = message_factory.GetMessageClass(descriptor)

    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except (pb_message.DecodeError, RuntimeError, ValueError):
            return None

    return st.binary(min_size=1, max_size=512).map(parse).filter(lambda m: m is not None)


def requests(descriptor: Descriptor, base: list[pb_message.Message] = ()) -> st.SearchStrategy[pb_message.Message]:
    """Generated messages, random bytes parsed, and (given valid examples) valid ones with fields overwritten."""
    options = [messages(descriptor), from_random_bytes(descriptor)]
    if base:
        options.append(mutations(descriptor, list(base)))
    return st.one_of(*options)


def mutations(descriptor: Descriptor, base: list[pb_message.Message]) -> st.SearchStrategy[pb_message.Message]:
    """A valid example with some of its fields (top level or one level down) set to hostile values."""
    cls = message_factory.GetMessageClass(descriptor)

    def merge(original: pb_message.Message, overlay: pb_message.Message) -> pb_message.Message:
        msg = cls()
        msg.CopyFrom(original)
        msg.MergeFrom(overlay)  # scalars overwritten, repeated appended, nested messages merged
        return msg

    return st.builds(merge, st.sampled_from(base), messages(descriptor))
