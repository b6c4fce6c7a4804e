"""Protobuf records and clients the service tests share."""

from __future__ import annotations

from typing import Any

import grpc

from skillfactory.tasks import Problem, get_task
from skillfactory.v1 import data_pb2, reward_pb2, reward_pb2_grpc


def problem_proto(problem: Problem) -> data_pb2.Problem:
    message = data_pb2.Problem(
        id=problem.id, task=problem.task, question=problem.question, answer=problem.answer
    )
    message.data.update(problem.data)
    return message


def scored_items(task: str, n: int, seed: int = 0, correct: bool = True) -> list[Any]:
    """`n` items of `task` whose responses give the reference answer (or a wrong one)."""
    items = []
    for problem in get_task(task).problems(n, seed=seed):
        answer = problem.answer if correct else "0"
        items.append(
            reward_pb2.ScoreItem(
                problem=problem_proto(problem), response=f"Thinking.\n<answer>{answer}</answer>"
            )
        )
    return items


def reward_stub(
    address: str, credentials: grpc.ChannelCredentials | None = None, max_message_mb: int = 4
) -> Any:
    options = [("grpc.max_receive_message_length", max_message_mb * 1024 * 1024)]
    channel = (
        grpc.secure_channel(address, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(address, options=options)
    )
    return reward_pb2_grpc.RewardServiceStub(channel)
