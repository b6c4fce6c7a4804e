"""Lossless conversion between the pydantic `RunSpec` and the protobuf `skillfactory.v1.RunSpec`.

The two schemas share field names, so the conversion walks the pydantic model and the proto
descriptor side by side instead of listing fields by hand:
- a nested spec is a sub-message; a list is a repeated field (of sub-messages for a list of
  specs, e.g. `datasets`, `grpo.rewards`);
- a field whose default is None is a proto3 `optional` field (unset means None);
- a discriminated union (`engine`, `queue`) is a `oneof` whose member is named by the `type` tag.
`schema_mismatches` lists every field present on one side only; a test keeps it empty.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from skillfactory.runspec import RunSpec, parse_run_spec
from skillfactory.v1 import runspec_pb2


def run_spec_to_proto(spec: RunSpec) -> runspec_pb2.RunSpec:
    """The protobuf form of a validated run spec."""
    message = runspec_pb2.RunSpec()
    _fill_message(message, spec)
    return message


def run_spec_from_proto(message: runspec_pb2.RunSpec) -> RunSpec:
    """Validate a protobuf run spec; raises `InvalidRunSpec` naming the bad field."""
    return parse_run_spec(_message_to_dict(message), "protobuf RunSpec")


def _fill_message(message: Message, model: BaseModel) -> None:
    descriptor = message.DESCRIPTOR
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name == "type" and name not in descriptor.fields_by_name:
            continue  # a union member's tag is the name of the oneof member that holds it
        if name in descriptor.oneofs_by_name:
            member = getattr(message, value.type)
            member.SetInParent()
            _fill_message(member, value)
        elif value is None:
            continue
        elif isinstance(value, BaseModel):
            sub = getattr(message, name)
            sub.SetInParent()
            _fill_message(sub, value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for item in value:
                _fill_message(getattr(message, name).add(), item)
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


def _message_to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    descriptor = message.DESCRIPTOR
    for oneof in descriptor.oneofs:
        if oneof.name.startswith("_"):  # synthetic oneof of a proto3 `optional` field
            continue
        member = message.WhichOneof(oneof.name)
        if member is not None:
            out[oneof.name] = {"type": member, **_message_to_dict(getattr(message, member))}
    for field in descriptor.fields:
        if field.containing_oneof is not None and not field.containing_oneof.name.startswith("_"):
            continue
        value = getattr(message, field.name)
        if field.has_presence and not message.HasField(field.name):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.is_repeated:
            out[field.name] = [_message_to_dict(item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = _message_to_dict(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _spec_classes(annotation: Any) -> list[type[BaseModel]]:
    """The spec models an annotation refers to (through Optional, Annotated and unions)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _spec_classes(get_args(annotation)[0])
    if origin is list:
        return _spec_classes(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [cls for arg in get_args(annotation) for cls in _spec_classes(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def schema_mismatches(
    model: type[BaseModel] = RunSpec, descriptor: Descriptor = runspec_pb2.RunSpec.DESCRIPTOR
) -> list[str]:
    """Fields present in only one of the two schemas, or with a different shape; [] when in sync."""
    return _mismatches(model.__name__, dict(model.model_fields), descriptor)


def _proto_field_names(descriptor: Descriptor) -> set[str]:
    """Plain fields plus real oneofs (proto3 `optional` fields sit in synthetic `_x` oneofs)."""
    real_oneofs = {name for name in descriptor.oneofs_by_name if not name.startswith("_")}
    plain = {
        f.name
        for f in descriptor.fields
        if f.containing_oneof is None or f.containing_oneof.name not in real_oneofs
    }
    return plain | real_oneofs


def _mismatches(owner: str, fields: dict[str, FieldInfo], descriptor: Descriptor) -> list[str]:
    proto_names = _proto_field_names(descriptor)
    problems = [
        f"{descriptor.full_name}: no field for pydantic {owner}.{name}"
        for name in sorted(set(fields) - proto_names)
    ]
    problems += [
        f"{owner}: no field for proto {descriptor.full_name}.{name}"
        for name in sorted(proto_names - set(fields))
    ]
    for name in sorted(set(fields) & proto_names):
        problems += _field_mismatches(f"{owner}.{name}", fields[name], descriptor, name)
    return problems


def _field_mismatches(where: str, info: FieldInfo, descriptor: Descriptor, name: str) -> list[str]:
    classes = _spec_classes(info.annotation)
    if name in descriptor.oneofs_by_name:
        return _union_mismatches(where, classes, descriptor.oneofs_by_name[name].fields)
    field = descriptor.fields_by_name[name]
    if classes:
        if field.message_type is None:
            return [f"{where}: proto field is not a message"]
        if (get_origin(info.annotation) is list) != field.is_repeated:
            return [f"{where}: list needs a repeated proto field and vice versa"]
        return _mismatches(where, dict(classes[0].model_fields), field.message_type)
    problems = []
    if (info.default is None) != field.has_presence:
        problems.append(f"{where}: None default needs a proto3 `optional` field and vice versa")
    if (get_origin(info.annotation) is list) != field.is_repeated:
        problems.append(f"{where}: list needs a repeated proto field and vice versa")
    return problems


def _union_mismatches(
    where: str, classes: list[type[BaseModel]], members: list[FieldDescriptor]
) -> list[str]:
    by_tag = {member.name: member for member in members}
    problems = []
    for cls in classes:
        tag = cls.model_fields["type"].default
        if tag not in by_tag:
            problems.append(f"{where}: oneof has no member {tag!r}")
            continue
        fields = {k: v for k, v in cls.model_fields.items() if k != "type"}
        problems += _mismatches(f"{where}[{tag}]", fields, by_tag[tag].message_type)
    extra = set(by_tag) - {cls.model_fields["type"].default for cls in classes}
    problems += [f"{where}: oneof member {tag!r} has no pydantic class" for tag in sorted(extra)]
    return problems
