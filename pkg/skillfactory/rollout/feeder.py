"""Rollout tasks: how the learner hands prompts to sampler workers in other processes.

The learner's `PromptFeeder` admits prompts under the staleness bound (the same
`AdmissionController` the embedded sampler uses) and puts one `skillfactory.v1.RolloutTask` per
prompt on the `prompts` stream. A task carries everything a sampler needs: the problem, its index
in the run's prompt stream, the sampling parameters, the model GRPO started from and the weight
store to catch up from, and the learner's *epoch* — a fresh id for each learner start, which the
groups carry back so a restarted learner can drop the work asked for by its previous incarnation
(that work's prompts are asked for again).
"""

from __future__ import annotations

import threading
import uuid

from skillfactory.engines.base import SamplingParams
from skillfactory.queue import Queue, put_message
from skillfactory.rollout.sampler import PromptStream
from skillfactory.rollout.streams import PROMPTS_STREAM
from skillfactory.tasks import Problem
from skillfactory.train.staleness import AdmissionController
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import problem_to_proto, sampling_to_proto


def new_epoch() -> str:
    """A fresh learner epoch id."""
    return uuid.uuid4().hex[:12]


def task_template(
    run_id: str,
    epoch: str,
    params: SamplingParams,
    *,
    model_uri: str,
    weights_uri: str,
) -> data_pb2.RolloutTask:
    """What every task of one learner epoch shares (problem and index left unset)."""
    return data_pb2.RolloutTask(
        run_id=run_id,
        epoch=epoch,
        n=params.n,
        sampling=sampling_to_proto(params),
        model_uri=model_uri,
        weights_uri=weights_uri,
    )


def rollout_task(
    template: data_pb2.RolloutTask, index: int, problem: Problem
) -> data_pb2.RolloutTask:
    """The task of prompt `index` of the run."""
    task = data_pb2.RolloutTask()
    task.CopyFrom(template)
    task.prompt_index = index
    task.problem.CopyFrom(problem_to_proto(problem))
    return task


class PromptFeeder:
    """Puts admitted prompts on the prompts stream, from a daemon thread."""

    def __init__(
        self,
        queue: Queue,
        prompts: PromptStream,
        admission: AdmissionController,
        template: data_pb2.RolloutTask,
        batch: int = 1,
    ) -> None:
        self.queue = queue
        self.prompts = prompts
        self.admission = admission
        self.template = template
        self.batch = max(1, batch)
        self.tasks_sent = 0
        self.error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        """Feed until `stop` is set or admission closes; an error is kept in `self.error`."""
        try:
            while not stop.is_set():
                admitted = self.admission.admit_blocking(self.batch, timeout=0.2)
                for index, problem in self.prompts.take(admitted):
                    put_message(
                        self.queue, PROMPTS_STREAM, rollout_task(self.template, index, problem)
                    )
                    self.tasks_sent += 1
        except BaseException as error:  # handed to the learner thread, which re-raises it
            self.error = error
            stop.set()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="prompt-feeder", daemon=True)
        thread.start()
        return thread
