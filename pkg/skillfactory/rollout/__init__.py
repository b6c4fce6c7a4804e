"""Where GRPO's groups are sampled: the prompt stream, the embedded sampler thread, the prompt
feeder that turns admitted prompts into rollout tasks, the sampler workers of rollout services that
serve them, and the pool of workers inside one service.

- `sampler`: the prompt stream, the GRPO prompt and its length filter, `make_group`, and the
  embedded `Sampler` (a thread of the learner's process);
- `scoring`: the one batched scorer (`GroupScorer`) every sampler grades with;
- `feeder`: the learner's `PromptFeeder` (rollout tasks on the `prompts` stream);
- `worker`: a `SamplerWorker` (rollout tasks in, graded groups out);
- `pool`: the workers of one rollout service.
"""
