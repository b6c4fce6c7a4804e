"""The queue's streams of the distributed mode, and the consumer group that reads each.

| stream | written by | read by (group) | payload |
|---|---|---|---|
| `prompts` | the learner's prompt feeder | sampler workers (`samplers`) | `RolloutTask` (GRPO) |
| `groups` | sampler workers | the learner (`learner`) | `Group` |
| `generations` | the learner's remote engine | generation workers (`generators`) | `GenerationTask` (stage 1, eval) |
| `generated` | generation workers | the learner (`orchestrator`) | `GenerationResult` |
| `dead-letter` | any worker | an operator | `DeadLetter` (a task delivered too often, or invalid) |
"""

from __future__ import annotations

PROMPTS_STREAM = "prompts"
SAMPLERS_GROUP = "samplers"
GROUPS_STREAM = "groups"
LEARNER_GROUP = "learner"
GENERATIONS_STREAM = "generations"
GENERATORS_GROUP = "generators"
GENERATED_STREAM = "generated"
ORCHESTRATOR_GROUP = "orchestrator"
DEAD_LETTER_STREAM = "dead-letter"
