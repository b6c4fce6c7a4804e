"""Issue 15 acceptance: every RPC of every service, fuzzed on real servers on loopback.

The reward, composer, rollout (the simulated engine, as `skillfactory up --engine simulated`
runs it) and learner servers run in this process on 127.0.0.1 with bearer tokens. Every RPC is
read from the services' descriptors (`*_pb2.DESCRIPTOR.services_by_name`, gRPC health included),
so a new RPC is fuzzed too (the enumeration test then asks for the new count, and a valid
request for it in `valid_requests`), and each gets, from a seeded generator:

- random messages of its input type, filled recursively: strings long (up to a few MiB, under the
  server's limit), unicode, NULs, hostile to graders and paths; integers and floats at their
  extremes; nested messages; repeated fields with many items; Struct values odd and deep;
- mutated messages: a valid request with a field set to a random value, or its serialized bytes
  with bits flipped, bytes inserted, deleted, duplicated or truncated (sent as raw bytes, so
  undecodable messages reach the server too);
- oversized messages: a field or an unknown field past the server's receive limit;
- calls with no token, a wrong one, and a role that may not call the method.

Every call has a deadline; a streaming call is read for a few messages, then cancelled. Every
call must end OK or with a gRPC status that is not UNKNOWN (an unhandled exception in a servicer:
grpc answers UNKNOWN "Exception calling application"), in time (no hang), and the servers must log
no unhandled exception. After each RPC's fuzz, the server's health answers SERVING within 1 s and
the RPC's valid request answers as it did before. `SKILLFACTORY_FUZZ_SECONDS` fuzzes each RPC
for more rounds (new seeds) until that many seconds in all are spent.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from service_records import problem_proto, scored_items

from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.engines.simulated import SeededTextEngine
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.runspec import RunSpec
from skillfactory.serving.auth import Caller, Role, TokenTable, bearer_metadata
from skillfactory.serving.composer import setup_composer_server
from skillfactory.serving.learner_api import setup_learner_server
from skillfactory.serving.reward import setup_reward_server
from skillfactory.serving.rollout import setup_rollout_server
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.server import MIB, ServiceServer, ServingConfig
from skillfactory.tasks import get_task
from skillfactory.v1 import (
    composer_pb2,
    data_pb2,
    learner_pb2,
    reward_pb2,
    rollout_pb2,
    run_pb2,
)
from skillfactory.wire.weight_store import folder_checksum

SERVICE_MODULES = (reward_pb2, composer_pb2, rollout_pb2, learner_pb2, health_pb2)
EXPECTED_RPCS = 14
"""Score; Compose; Generate, GenerateStream, UpdateWeights, GetPolicyVersion; SubmitRun, GetRun,
ListRuns, CancelRun, WatchRun; Health Check, List, Watch. A new RPC is fuzzed with an empty
message as its valid request until one is added to `valid_requests`."""

TOKEN = "fuzz-admin-token"
ROLLOUT_TOKEN = "fuzz-rollout-token"
"""The `rollout` role may call only `RewardService/Score`: PERMISSION_DENIED elsewhere."""
MAX_MESSAGE_MB = 8
LIMIT_BYTES = MAX_MESSAGE_MB * MIB
DEADLINE_S = 5.0
HANG_MARGIN_S = 2.5
"""A call may end this long after its deadline (2 busy cores) before it counts as a hang."""
HEALTH_S = 1.0
STREAM_READ = 3
STREAM_WINDOW_S = 2.0
STREAM_NEXT_S = 0.2
"""A streaming call is cancelled after `STREAM_READ` messages, or `STREAM_WINDOW_S` seconds
without a first one, or `STREAM_NEXT_S` after the first one, whichever comes first (a watch of a
run or of health stays open until its deadline)."""

SEED = 15
RANDOM_PER_RPC = 80
MUTATED_PER_RPC = 100
OVERSIZED_PER_RPC = 2
FUZZ_SECONDS = float(os.environ.get("SKILLFACTORY_FUZZ_SECONDS", "0"))
"""Total seconds to fuzz for (split among the RPCs); 0: one round of the counts above."""

UNHANDLED_MARKERS = ("Traceback", "Exception calling application", "Exception iterating")
BENIGN_SERVER_ERRORS = ("Exception deserializing request", "Method not implemented!")
"""grpc's own log lines for an undecodable request (answered INTERNAL) and for a method the
servicer does not implement (UNIMPLEMENTED: the health service's `List` in older grpcio): statuses."""


# ---- the RPCs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: str
    method: str
    input_type: Descriptor
    output_type: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def enumerate_rpcs() -> list[Rpc]:
    rpcs = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs.append(
                    Rpc(
                        service.full_name,
                        method.name,
                        method.input_type,
                        method.output_type,
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return rpcs


RPCS = enumerate_rpcs()


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


# ---- random messages ----------------------------------------------------------------------------

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 100,
    "é",
    "\u202eevil",
    "\ufeff",
    "\U0001d518\U0001d52b\U0001d526",
    "👩\u200d👩\u200d👧",
    "\u0301\u0301\u0301",
    "\r\n\t\x0b\x0c",
    "<answer>",
    "</answer>",
    "<answer>1</answer>",
    "<answer>" * 2000,
    "<verdict>Correct</verdict>",
    "9^{9^{9^{9}}}",
    "5+10^{-10^{9}}",
    "1e30000000",
    "10**10**10",
    "(" * 5000 + "1",
    "9" * 5000,
    "-1",
    "0",
    "NaN",
    "inf",
    "-inf",
    "{}",
    "[]",
    "null",
    "%s%n%x",
    "${HOME}",
    "'; DROP TABLE runs; --",
    "/",
    ".",
    "..",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/dev/zero",
    "/proc/self/fd/0",
    "~",
    "file://",
    "file:///",
    "file:///etc",
    "file://../x",
    "http://127.0.0.1:1/",
    "redis://127.0.0.1:1/0",
    "a/b",
    "HuggingFaceTB/SmolLM2-135M",
    "smollm2-135m",
    "countdown-4",
    "multiplication-2",
    "gsm8k",
    "plain",
    "no-such-thing",
)

UNICODE_RANGES = ((0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x6FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F))

INT_EXTREMES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
ODD_DOUBLES = (0.0, -0.0, 1.0, -1.0, 0.5, math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324)
ODD_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, math.inf, -math.inf, math.nan, 3.4e38, 1e-45)
REPEATED_COUNTS = (0, 1, 2, 3, 5, 17, 200, 2000)
REPEATED_WEIGHTS = (3, 4, 3, 2, 2, 2, 1, 1)


def harvest_strings(message: Message, into: set[str]) -> None:
    """Every string value in `message` (so random fields often hold names the server knows)."""
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else [value]
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            values = list(value.keys())
            if descriptor.message_type.fields_by_name["value"].message_type is not None:
                for inner in value.values():
                    harvest_strings(inner, into)
        for item in values:
            if isinstance(item, Message):
                harvest_strings(item, into)
            elif isinstance(item, str):
                into.add(item)


class Fuzzer:
    """Random values and messages from one seeded generator; `known` are strings the valid
    requests hold."""

    def __init__(self, seed: int, known: set[str]) -> None:
        self.rng = random.Random(seed)
        self.known = sorted(known)
        self.long_left = 0
        self.items_left = 0

    # scalars -------------------------------------------------------------------------------

    def string(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            return rng.choice(ODD_STRINGS)
        if roll < 0.45 and self.known:
            known = rng.choice(self.known)
            return known if rng.random() < 0.7 else known + rng.choice(ODD_STRINGS)
        if roll < 0.75:
            return "".join(
                chr(rng.randint(*rng.choice(UNICODE_RANGES))) for _ in range(rng.randint(1, 40))
            )
        if roll < 0.85:
            return "".join(rng.choice("abc/.\x00<>{}") for _ in range(rng.randint(1, 200)))
        if roll < 0.92 and self.long_left > 0:  # a long one: 64 KiB to 3 MiB, within the budget
            size = min(self.long_left, rng.choice((64 * 1024, 1 * MIB, 2 * MIB, 3 * MIB)))
            self.long_left -= size
            unit = rng.choice(("x", "é", "<answer>1</answer>", "9", "\x00", "(", " "))
            return unit * max(1, size // len(unit.encode()))
        return str(rng.randint(-(10**6), 10**6))

    def bytes_(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 8, 64, 4096)))

    def integer(self, cpp_type: int) -> int:
        low, high = INT_EXTREMES[cpp_type]
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return rng.choice((low, high, 0, 1, -1 if low < 0 else 2, low + 1, high - 1))
        if roll < 0.7:
            return max(low, min(high, rng.randint(-5, 100)))
        return rng.randint(low, high)

    def scalar(self, descriptor: FieldDescriptor) -> Any:
        cpp = descriptor.cpp_type
        rng = self.rng
        if cpp in INT_EXTREMES:
            return self.integer(cpp)
        if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
            return rng.choice(ODD_DOUBLES) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
        if cpp == FieldDescriptor.CPPTYPE_FLOAT:
            return rng.choice(ODD_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return rng.random() < 0.5
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            values = [v.number for v in descriptor.enum_type.values]
            return rng.choice(values) if rng.random() < 0.8 else rng.choice((-1, 99, 2**31 - 1))
        if cpp == FieldDescriptor.CPPTYPE_STRING:
            if descriptor.type == FieldDescriptor.TYPE_BYTES:
                return self.bytes_()
            return self.string()
        raise AssertionError(f"no scalar for {descriptor.full_name}")

    def plain(self, depth: int = 0) -> Any:
        """A JSON-like value for a Struct, odd contents included."""
        rng = self.rng
        roll = rng.random()
        if depth < 4 and roll < 0.2:
            return {self.string()[:200]: self.plain(depth + 1) for _ in range(rng.randint(0, 6))}
        if depth < 4 and roll < 0.35:
            return [self.plain(depth + 1) for _ in range(rng.choice((0, 1, 3, 50)))]
        if roll < 0.55:
            return rng.choice(ODD_DOUBLES + (2**53 + 1, -(2**63), 10**30))
        if roll < 0.65:
            return rng.choice((True, False, None))
        return self.string()[: 64 * 1024]

    def struct(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.1:  # deep: past protobuf's recursion limit on the server sometimes
            value: Any = "bottom"
            for _ in range(rng.choice((30, 60, 120))):
                value = {"d": value} if rng.random() < 0.5 else [value]
            return {"deep": value}
        fields = {self.string()[:200]: self.plain() for _ in range(rng.randint(0, 8))}
        if self.known and rng.random() < 0.5:  # keys a task reads (numbers, target, …)
            fields[rng.choice(self.known)[:200]] = self.plain()
        for key in ("numbers", "target", "operands", "a", "b"):
            if rng.random() < 0.15:
                fields[key] = self.plain()
        return fields

    # messages ------------------------------------------------------------------------------

    def message(self, descriptor: Descriptor, long_budget: int = 3 * MIB) -> Message:
        """A random message of `descriptor`'s type (long strings up to `long_budget` bytes)."""
        self.long_left = long_budget if self.rng.random() < 0.35 else 0
        self.items_left = 4000
        message = message_class(descriptor)()
        self.fill(message, 0)
        return message

    def fill(self, message: Message, depth: int) -> None:
        descriptor = message.DESCRIPTOR
        if descriptor.full_name == "google.protobuf.Struct":
            message.update(self.struct())
            return
        if descriptor.full_name in ("google.protobuf.Value", "google.protobuf.ListValue"):
            holder = message_class(
                descriptor.file.pool.FindMessageTypeByName("google.protobuf.Struct")
            )()
            holder.update({"v": [self.plain()]})
            value = holder.fields["v"]
            message.CopyFrom(value if descriptor.name == "Value" else value.list_value)
            return
        for field_descriptor in descriptor.fields:
            if self.rng.random() < 0.35 or self.items_left <= 0:
                continue
            self.fill_field(message, field_descriptor, depth)

    def fill_field(self, message: Message, descriptor: FieldDescriptor, depth: int) -> None:
        rng = self.rng
        target = getattr(message, descriptor.name)
        sub = descriptor.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
            for _ in range(rng.choices(REPEATED_COUNTS, REPEATED_WEIGHTS)[0]):
                self.items_left -= 1
                key = self.scalar(key_field)
                if value_field.message_type is not None:
                    if depth < 4:
                        self.fill(target[key], depth + 1)
                else:
                    target[key] = self.scalar(value_field)
            return
        if descriptor.is_repeated:
            count = rng.choices(REPEATED_COUNTS, REPEATED_WEIGHTS)[0]
            for _ in range(min(count, max(self.items_left, 0))):
                self.items_left -= 1
                if sub is not None:
                    if depth >= 4:
                        target.add()
                    else:
                        self.fill(target.add(), depth + 1)
                else:
                    self.append_scalar(target, descriptor)
            return
        if sub is not None:
            self.items_left -= 1
            target.SetInParent()
            if depth < 4:
                self.fill(target, depth + 1)
            return
        self.set_scalar(message, descriptor)

    def set_scalar(self, message: Message, descriptor: FieldDescriptor) -> None:
        try:
            setattr(message, descriptor.name, self.scalar(descriptor))
        except (ValueError, TypeError):  # an enum value a closed enum refuses
            setattr(message, descriptor.name, descriptor.default_value)

    def append_scalar(self, target: Any, descriptor: FieldDescriptor) -> None:
        try:
            target.append(self.scalar(descriptor))
        except (ValueError, TypeError):
            target.append(descriptor.default_value)

    # mutations -----------------------------------------------------------------------------

    def mutate_fields(self, valid: Message) -> bytes:
        """`valid` with one to three fields (anywhere in it) set to random values."""
        message = type(valid)()
        message.CopyFrom(valid)
        self.long_left = 2 * MIB if self.rng.random() < 0.3 else 0
        self.items_left = 2000
        for _ in range(self.rng.randint(1, 3)):
            holder = message
            for _ in range(self.rng.randint(0, 4)):  # walk into a set sub-message
                subs = [
                    (d, v)
                    for d, v in holder.ListFields()
                    if d.message_type is not None and not d.message_type.GetOptions().map_entry
                ]
                if not subs:
                    break
                descriptor, value = self.rng.choice(subs)
                if descriptor.is_repeated:
                    if not len(value):
                        break
                    holder = value[self.rng.randrange(len(value))]
                else:
                    holder = value
            if holder.DESCRIPTOR.full_name.startswith("google.protobuf."):
                self.fill(holder, 3)
                continue
            fields = holder.DESCRIPTOR.fields
            if not fields:
                continue
            descriptor = self.rng.choice(fields)
            if not descriptor.is_repeated or self.rng.random() < 0.5:
                holder.ClearField(descriptor.name)
            self.fill_field(holder, descriptor, 2)
        return message.SerializeToString()

    def mutate_bytes(self, data: bytes) -> bytes:
        """`data` with one to six byte-level mutations."""
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randint(0, len(out))
            roll = rng.randrange(9)
            if roll == 0 and out:
                index = min(at, len(out) - 1)
                out[index] ^= 1 << rng.randrange(8)
            elif roll == 1 and out:
                out[min(at, len(out) - 1)] = rng.choice(
                    (0x00, 0xFF, 0x7F, 0x80, rng.randrange(256))
                )
            elif roll == 2:
                out[at:at] = rng.randbytes(rng.randint(1, 16))
            elif roll == 3:
                del out[at : at + rng.randint(1, 16)]
            elif roll == 4 and out:
                start = rng.randrange(len(out))
                out += out[start : start + rng.randint(1, 64)]
            elif roll == 5:
                del out[at:]
            elif roll == 6:
                out[at:at] = b"\xff" * 10 + b"\x01"  # an over-long varint
            elif roll == 7:  # a length-delimited field that claims far more than follows
                out += bytes([(rng.randint(1, 15) << 3) | 2]) + b"\xff\xff\xff\xff\x07" + b"abc"
            else:  # an unknown field of a random wire type
                number = rng.choice((16, 99, 1000, 536_870_911))
                out += _varint((number << 3) | rng.choice((0, 1, 2, 5))) + rng.randbytes(9)
        return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def oversized(valid: Message, index: int) -> bytes:
    """`valid` past the server's receive limit: a string field of it (when it has one) or an
    unknown field holding `LIMIT_BYTES` + 64 KiB."""
    big = "x" * (LIMIT_BYTES + 64 * 1024)
    strings = [
        f
        for f in valid.DESCRIPTOR.fields
        if f.type == FieldDescriptor.TYPE_STRING
        and not f.is_repeated
        and f.containing_oneof is None
    ]
    if index % 2 == 0 and strings:
        message = type(valid)()
        message.CopyFrom(valid)
        setattr(message, strings[0].name, big)
        return message.SerializeToString()
    return valid.SerializeToString() + _varint((999 << 3) | 2) + _varint(len(big)) + big.encode()


# ---- the servers --------------------------------------------------------------------------------


class ServerErrors(logging.Handler):
    """Unhandled exceptions grpc logs on the server side (also those after the client left)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        if any(benign in text for benign in BENIGN_SERVER_ERRORS):
            return
        with self.guard:
            self.records.append(text[:2000])

    def take(self) -> list[str]:
        with self.guard:
            taken, self.records = self.records, []
        return taken


@dataclass
class Fleet:
    servers: dict[str, ServiceServer]
    """By gRPC service name; the health service is fuzzed on every server in turn."""
    channels: dict[str, grpc.Channel]
    valid: dict[str, Message]
    baseline: dict[str, grpc.StatusCode] = field(default_factory=dict)
    """What each valid request answered before the fuzz."""
    baseline_details: dict[str, str] = field(default_factory=dict)
    errors: ServerErrors = field(default_factory=ServerErrors)
    known: set[str] = field(default_factory=set)

    def valid_bytes(self, rpc: Rpc) -> bytes:
        message = self.valid.get(rpc.path)
        return b"" if message is None else message.SerializeToString()

    def targets(self, rpc: Rpc) -> list[str]:
        if rpc.service in self.servers:
            return [rpc.service]
        return sorted(self.servers)  # the health service: on each server


def valid_requests(root: Path, run_id: str) -> dict[str, Message]:
    """One well-formed request per RPC (the seeds of the mutations)."""
    countdown = get_task("countdown-4").problems(1, seed=2)[0]
    problem = problem_proto(countdown)
    samples = [
        data_pb2.Sample(
            text=f"Let me compute.\n<answer>{answer}</answer>",
            prompt_variant=variant,
            correct=correct,
            reflections=[
                data_pb2.Reflection(text="Checked. <verdict>Correct</verdict>"),
                data_pb2.Reflection(text="Hmm.", verdict=data_pb2.VERDICT_INCORRECT),
            ],
        )
        for answer, variant, correct in (
            (countdown.answer, "plain", True),
            ("1 + 1", "plan", False),
        )
    ]
    weights = root / "weights" / "v000001"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"not really safetensors")
    spec = RunSpec(name="fuzz", model="models/fuzz/missing", output_dir="runs", stages=["data"])
    sampling = data_pb2.SamplingParams(temperature=1.0, max_tokens=16, seed=3, stop=["\n"])
    return {
        "/skillfactory.v1.RewardService/Score": reward_pb2.ScoreRequest(
            items=scored_items("countdown-4", 2) + scored_items("multiplication-2", 1),
            groups=[reward_pb2.ScoreGroup(problem=problem, responses=["<answer>1</answer>", "x"])],
        ),
        "/skillfactory.v1.Composer/Compose": composer_pb2.ComposeRequest(
            run_id="fuzz",
            problems=[data_pb2.ProblemSamples(problem=problem, samples=samples)],
            seed=1,
            variant="plain",
            max_samples_per_trace=4,
            output_uri="fuzz/sft.jsonl",
        ),
        "/skillfactory.v1.Rollout/Generate": rollout_pb2.GenerateRequest(
            prompts=["What is 1 + 1?", "abc"], n=2, sampling=sampling, run_id="fuzz"
        ),
        "/skillfactory.v1.Rollout/GenerateStream": rollout_pb2.GenerateRequest(
            prompts=["What is 1 + 1?", "abc", "def", "ghi"], n=2, sampling=sampling
        ),
        "/skillfactory.v1.Rollout/UpdateWeights": rollout_pb2.UpdateWeightsRequest(
            update=data_pb2.WeightUpdate(
                run_id="fuzz",
                version=1,
                uri=f"file://{weights}",
                checksum=folder_checksum(weights),
            )
        ),
        "/skillfactory.v1.Rollout/GetPolicyVersion": rollout_pb2.GetPolicyVersionRequest(),
        "/skillfactory.v1.Learner/SubmitRun": learner_pb2.SubmitRunRequest(
            spec=run_spec_to_proto(spec)
        ),
        "/skillfactory.v1.Learner/GetRun": learner_pb2.GetRunRequest(run_id=run_id),
        "/skillfactory.v1.Learner/ListRuns": learner_pb2.ListRunsRequest(page_size=2),
        "/skillfactory.v1.Learner/CancelRun": learner_pb2.CancelRunRequest(
            run_id=run_id, reason="fuzz"
        ),
        "/skillfactory.v1.Learner/WatchRun": learner_pb2.WatchRunRequest(run_id=run_id),
        "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest(service=""),
        "/grpc.health.v1.Health/List": health_pb2.HealthListRequest(),
        "/grpc.health.v1.Health/Watch": health_pb2.HealthCheckRequest(
            service="skillfactory.v1.Learner"
        ),
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fuzz")
    errors = ServerErrors()
    grpc_log = logging.getLogger("grpc._server")
    grpc_log.addHandler(errors)
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")  # a run that names a hub id fails at once
    callers = TokenTable(((Caller("rollout", Role.ROLLOUT), ROLLOUT_TOKEN),))
    config = ServingConfig(
        token=TOKEN,
        tokens=callers,
        grace_s=0.5,
        linger_s=0.0,
        metrics_port=None,
        max_message_mb=MAX_MESSAGE_MB,
    )
    rollout, servicer = setup_rollout_server(
        config,
        SeededTextEngine(),
        model="simulated",
        engine_factory=lambda _name: SeededTextEngine(),
        limits=GenerationLimits(),
    )
    learner = setup_learner_server(config, root / "state", policy=RunPolicy(root / "data"))
    learner.run_stop_timeout_s = 10.0
    servers: dict[str, ServiceServer] = {
        "skillfactory.v1.RewardService": setup_reward_server(config),
        "skillfactory.v1.Composer": setup_composer_server(config, root / "store"),
        "skillfactory.v1.Rollout": rollout,
        "skillfactory.v1.Learner": learner,
    }
    options = [("grpc.max_receive_message_length", 64 * MIB), ("grpc.max_send_message_length", -1)]
    channels: dict[str, grpc.Channel] = {}
    try:
        for name, server in servers.items():
            server.start()
            channels[name] = grpc.insecure_channel(server.address, options=options)
        stub = channels["skillfactory.v1.Learner"].unary_unary(
            "/skillfactory.v1.Learner/SubmitRun",
            request_serializer=learner_pb2.SubmitRunRequest.SerializeToString,
            response_deserializer=learner_pb2.SubmitRunResponse.FromString,
        )
        spec = RunSpec(name="watched", model="models/fuzz/missing", stages=["data"])
        run_id = stub(
            learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(spec)),
            metadata=bearer_metadata(TOKEN),
            timeout=10,
        ).run_id
        fleet = Fleet(servers, channels, valid_requests(root, run_id), errors=errors)
        for message in fleet.valid.values():
            harvest_strings(message, fleet.known)
        for rpc in RPCS:
            outcome = call(fleet, rpc, fleet.targets(rpc)[0], fleet.valid_bytes(rpc))
            fleet.baseline[rpc.path] = outcome.code
            fleet.baseline_details[rpc.path] = outcome.details
        yield fleet
    finally:
        try:
            cancel_open_runs(channels.get("skillfactory.v1.Learner"))
        finally:
            for channel in channels.values():
                channel.close()
            for server in servers.values():
                server.stop(grace_s=0)
            servicer.close()
            grpc_log.removeHandler(errors)
            patch.undo()


def cancel_open_runs(channel: grpc.Channel | None) -> None:
    """Cancel every run the fuzz left pending or running (a random spec the service accepted)."""
    if channel is None:
        return
    metadata = bearer_metadata(TOKEN)
    list_runs = channel.unary_unary(
        "/skillfactory.v1.Learner/ListRuns",
        request_serializer=learner_pb2.ListRunsRequest.SerializeToString,
        response_deserializer=learner_pb2.ListRunsResponse.FromString,
    )
    cancel = channel.unary_unary(
        "/skillfactory.v1.Learner/CancelRun",
        request_serializer=learner_pb2.CancelRunRequest.SerializeToString,
        response_deserializer=lambda raw: raw,
    )
    token = ""
    while True:
        page = list_runs(
            learner_pb2.ListRunsRequest(page_size=100, page_token=token),
            metadata=metadata,
            timeout=10,
        )
        for run in page.runs:
            if run.state in (run_pb2.RUN_STATE_PENDING, run_pb2.RUN_STATE_RUNNING):
                cancel(
                    learner_pb2.CancelRunRequest(run_id=run.run_id), metadata=metadata, timeout=10
                )
        token = page.next_page_token
        if not token:
            return


# ---- calls --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    seconds: float
    problem: str | None = None


def call(
    fleet: Fleet,
    rpc: Rpc,
    target: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Outcome:
    """One call of `rpc` with raw request bytes, checked: OK or a status that is not an unhandled
    exception, within the deadline (streams: a few messages, then cancelled)."""
    channel = fleet.channels[target]
    metadata = bearer_metadata(TOKEN) if metadata is None else metadata
    decode = message_class(rpc.output_type).FromString
    started = time.monotonic()
    code, details, problem = grpc.StatusCode.OK, "", None
    try:
        if not rpc.server_streaming:
            method = (
                channel.stream_unary(rpc.path)
                if rpc.client_streaming
                else channel.unary_unary(rpc.path)
            )
            request: Any = iter([payload, payload]) if rpc.client_streaming else payload
            decode(method(request, timeout=DEADLINE_S, metadata=metadata))
        else:
            stream_method = (
                channel.stream_stream(rpc.path)
                if rpc.client_streaming
                else channel.unary_stream(rpc.path)
            )
            request = iter([payload, payload]) if rpc.client_streaming else payload
            responses = stream_method(request, timeout=DEADLINE_S, metadata=metadata)
            window = threading.Timer(STREAM_WINDOW_S, responses.cancel)  # a watch may stay open
            window.start()
            try:
                for read, raw in enumerate(responses, start=1):
                    decode(raw)
                    if read >= STREAM_READ:
                        responses.cancel()
                        break
                    if read == 1:  # answering: the next messages come soon or not at all
                        window.cancel()
                        window = threading.Timer(STREAM_NEXT_S, responses.cancel)
                        window.start()
            finally:
                window.cancel()
            code = responses.code()
            details = responses.details() or ""
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
    seconds = time.monotonic() - started
    if not isinstance(code, grpc.StatusCode):
        problem = f"not a gRPC status: {code!r}"
    elif code == grpc.StatusCode.UNKNOWN or any(m in details for m in UNHANDLED_MARKERS):
        problem = f"unhandled exception: {code.name}: {details[:500]}"
    elif seconds > DEADLINE_S + HANG_MARGIN_S:
        problem = f"hang: {seconds:.1f} s with a {DEADLINE_S} s deadline ({code.name})"
    return Outcome(code, details, seconds, problem)


def health_serving(fleet: Fleet, target: str) -> list[str]:
    """Problems with the server's health: each of its services must be SERVING within 1 s."""
    check = fleet.channels[target].unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    problems = []
    for service in ("", target):
        try:
            status = check(health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_S).status
        except grpc.RpcError as error:
            problems.append(f"{target} health {service!r}: {error.code().name}")
            continue
        if status != health_pb2.HealthCheckResponse.SERVING:
            problems.append(f"{target} health {service!r}: {status}")
    return problems


@dataclass
class Tally:
    calls: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: Outcome, expected: tuple[grpc.StatusCode, ...] = ()) -> None:
        self.calls += 1
        self.codes[outcome.code.name] = self.codes.get(outcome.code.name, 0) + 1
        if outcome.problem is not None:
            self.problems.append(f"{kind}: {outcome.problem}")
        elif expected and outcome.code not in expected:
            self.problems.append(
                f"{kind}: {outcome.code.name} ({outcome.details[:200]}), wanted {expected}"
            )


def fuzz_round(fleet: Fleet, rpc: Rpc, seed: int, tally: Tally) -> None:
    """One round: random, mutated and oversized messages, and bad tokens."""
    fuzzer = Fuzzer(seed, fleet.known)
    valid = fleet.valid.get(rpc.path) or message_class(rpc.input_type)()
    targets = fleet.targets(rpc)
    for index in range(RANDOM_PER_RPC):
        payload = fuzzer.message(rpc.input_type).SerializeToString()
        tally.add(f"random #{index}", call(fleet, rpc, targets[index % len(targets)], payload))
    for index in range(MUTATED_PER_RPC):
        if index % 2 == 0:
            payload = fuzzer.mutate_fields(valid)
        else:
            payload = fuzzer.mutate_bytes(valid.SerializeToString())
        tally.add(f"mutated #{index}", call(fleet, rpc, targets[index % len(targets)], payload))
    for index in range(OVERSIZED_PER_RPC):
        outcome = call(fleet, rpc, targets[index % len(targets)], oversized(valid, index))
        tally.add(f"oversized #{index}", outcome, (grpc.StatusCode.RESOURCE_EXHAUSTED,))
    valid_bytes = valid.SerializeToString()
    health = rpc.service == "grpc.health.v1.Health"
    # the health service needs no token: it answers as it did to the admin (a watch: cancelled)
    as_admin = (fleet.baseline[rpc.path], grpc.StatusCode.CANCELLED)
    refused = as_admin if health else (grpc.StatusCode.UNAUTHENTICATED,)
    for kind, metadata in (
        ("no token", ()),
        ("wrong token", bearer_metadata("not-the-token")),
        ("not a bearer token", (("authorization", "Basic " + TOKEN),)),
        ("long token", bearer_metadata("t" * 6000)),
    ):
        tally.add(kind, call(fleet, rpc, targets[0], valid_bytes, metadata), refused)
    allowed = health or rpc.service == "skillfactory.v1.RewardService"
    role = as_admin if allowed else (grpc.StatusCode.PERMISSION_DENIED,)
    tally.add(
        "rollout role",
        call(fleet, rpc, targets[0], valid_bytes, bearer_metadata(ROLLOUT_TOKEN)),
        role,
    )


def settled(rpc: Rpc, code: grpc.StatusCode) -> grpc.StatusCode:
    """A stream this test cancelled after a few messages answered as well as one that ended."""
    return grpc.StatusCode.OK if rpc.streaming and code == grpc.StatusCode.CANCELLED else code


# ---- the tests ----------------------------------------------------------------------------------


def test_every_rpc_of_every_service_is_enumerated() -> None:
    names = [rpc.path for rpc in RPCS]
    assert len(names) == len(set(names)) == EXPECTED_RPCS, names
    services = {rpc.service for rpc in RPCS}
    assert services == {
        "skillfactory.v1.RewardService",
        "skillfactory.v1.Composer",
        "skillfactory.v1.Rollout",
        "skillfactory.v1.Learner",
        "grpc.health.v1.Health",
    }
    assert any(rpc.server_streaming for rpc in RPCS)


@pytest.mark.timeout(120 + 2 * FUZZ_SECONDS / len(RPCS))
@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.path.strip("/") for rpc in RPCS])
def test_fuzzed_rpc_answers_a_status_in_time_and_the_server_stays_serving(
    fleet: Fleet, rpc: Rpc
) -> None:
    tally = Tally()
    started = time.monotonic()
    share = FUZZ_SECONDS / len(RPCS)
    round_number = 0
    while True:
        fuzz_round(fleet, rpc, zlib.crc32(f"{SEED}/{rpc.path}/{round_number}".encode()), tally)
        round_number += 1
        if time.monotonic() - started >= share:
            break
    for target in fleet.targets(rpc):
        tally.problems += health_serving(fleet, target)
        after = call(fleet, rpc, target, fleet.valid_bytes(rpc))
        if settled(rpc, after.code) != settled(rpc, fleet.baseline[rpc.path]):
            tally.problems.append(
                f"the valid request now answers {after.code.name} ({after.details[:200]}), "
                f"before the fuzz {fleet.baseline[rpc.path].name} ({fleet.baseline_details[rpc.path][:200]})"
            )
    tally.problems += [f"server logged: {text}" for text in fleet.errors.take()]
    print(f"{rpc.path}: {tally.calls} calls in {time.monotonic() - started:.1f} s, {tally.codes}")
    assert tally.calls >= RANDOM_PER_RPC + MUTATED_PER_RPC + OVERSIZED_PER_RPC
    decoded = tally.calls - sum(tally.codes.get(c, 0) for c in ("INTERNAL", "RESOURCE_EXHAUSTED"))
    assert decoded > tally.calls / 2, f"most calls never reached the servicer: {tally.codes}"
    assert not tally.problems, (
        f"{len(tally.problems)} of {tally.calls} calls failed ({tally.codes}):\n"
        + "\n".join(tally.problems[:15])
    )


def test_after_the_fuzz_every_server_is_serving(fleet: Fleet) -> None:
    problems = [problem for target in fleet.servers for problem in health_serving(fleet, target)]
    assert not problems
    assert not fleet.errors.take()
