from skillfactory.v1 import data_pb2 as _data_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComposeRequest(_message.Message):
    __slots__ = ("run_id", "problems", "seed", "variant", "max_samples_per_trace", "output_uri")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_PER_TRACE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_URI_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    problems: _containers.RepeatedCompositeFieldContainer[_data_pb2.ProblemSamples]
    seed: int
    variant: str
    max_samples_per_trace: int
    output_uri: str
    def __init__(self, run_id: _Optional[str] = ..., problems: _Optional[_Iterable[_Union[_data_pb2.ProblemSamples, _Mapping]]] = ..., seed: _Optional[int] = ..., variant: _Optional[str] = ..., max_samples_per_trace: _Optional[int] = ..., output_uri: _Optional[str] = ...) -> None: ...

class FilterClassCounts(_message.Message):
    __slots__ = ("kept", "dropped_mismatch", "dropped_no_verdict", "dropped_malformed")
    KEPT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    DROPPED_NO_VERDICT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MALFORMED_FIELD_NUMBER: _ClassVar[int]
    kept: int
    dropped_mismatch: int
    dropped_no_verdict: int
    dropped_malformed: int
    def __init__(self, kept: _Optional[int] = ..., dropped_mismatch: _Optional[int] = ..., dropped_no_verdict: _Optional[int] = ..., dropped_malformed: _Optional[int] = ...) -> None: ...

class ComposeSummary(_message.Message):
    __slots__ = ("problems_in", "problems_without_correct", "pairs_kept_correct", "pairs_kept_incorrect", "pairs_dropped_correct", "pairs_dropped_incorrect", "traces_out", "problems_without_trace", "samples_in", "samples_correct", "samples_unusable", "filter_correct", "filter_incorrect", "trace_lengths")
    class TraceLengthsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    PROBLEMS_IN_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_WITHOUT_CORRECT_FIELD_NUMBER: _ClassVar[int]
    PAIRS_KEPT_CORRECT_FIELD_NUMBER: _ClassVar[int]
    PAIRS_KEPT_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    PAIRS_DROPPED_CORRECT_FIELD_NUMBER: _ClassVar[int]
    PAIRS_DROPPED_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    TRACES_OUT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_WITHOUT_TRACE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_IN_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_CORRECT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_UNUSABLE_FIELD_NUMBER: _ClassVar[int]
    FILTER_CORRECT_FIELD_NUMBER: _ClassVar[int]
    FILTER_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    TRACE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    problems_in: int
    problems_without_correct: int
    pairs_kept_correct: int
    pairs_kept_incorrect: int
    pairs_dropped_correct: int
    pairs_dropped_incorrect: int
    traces_out: int
    problems_without_trace: int
    samples_in: int
    samples_correct: int
    samples_unusable: int
    filter_correct: FilterClassCounts
    filter_incorrect: FilterClassCounts
    trace_lengths: _containers.ScalarMap[int, int]
    def __init__(self, problems_in: _Optional[int] = ..., problems_without_correct: _Optional[int] = ..., pairs_kept_correct: _Optional[int] = ..., pairs_kept_incorrect: _Optional[int] = ..., pairs_dropped_correct: _Optional[int] = ..., pairs_dropped_incorrect: _Optional[int] = ..., traces_out: _Optional[int] = ..., problems_without_trace: _Optional[int] = ..., samples_in: _Optional[int] = ..., samples_correct: _Optional[int] = ..., samples_unusable: _Optional[int] = ..., filter_correct: _Optional[_Union[FilterClassCounts, _Mapping]] = ..., filter_incorrect: _Optional[_Union[FilterClassCounts, _Mapping]] = ..., trace_lengths: _Optional[_Mapping[int, int]] = ...) -> None: ...

class ComposeResponse(_message.Message):
    __slots__ = ("traces", "summary", "output_uri")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_URI_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[_data_pb2.Trace]
    summary: ComposeSummary
    output_uri: str
    def __init__(self, traces: _Optional[_Iterable[_Union[_data_pb2.Trace, _Mapping]]] = ..., summary: _Optional[_Union[ComposeSummary, _Mapping]] = ..., output_uri: _Optional[str] = ...) -> None: ...
