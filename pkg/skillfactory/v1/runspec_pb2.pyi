from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingSpec(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "stop")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., repetition_penalty: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class TransformersEngineSpec(_message.Message):
    __slots__ = ("dtype", "max_batch_size", "compile", "device")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    max_batch_size: int
    compile: bool
    device: str
    def __init__(self, dtype: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., compile: _Optional[bool] = ..., device: _Optional[str] = ...) -> None: ...

class VllmEngineSpec(_message.Message):
    __slots__ = ("dtype", "gpu_memory_utilization", "kv_cache_gib", "enforce_eager", "max_model_len", "tensor_parallel_size", "enable_prefix_caching", "enable_sleep_mode")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_GIB_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_EAGER_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENABLE_PREFIX_CACHING_FIELD_NUMBER: _ClassVar[int]
    ENABLE_SLEEP_MODE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    gpu_memory_utilization: float
    kv_cache_gib: float
    enforce_eager: bool
    max_model_len: int
    tensor_parallel_size: int
    enable_prefix_caching: bool
    enable_sleep_mode: bool
    def __init__(self, dtype: _Optional[str] = ..., gpu_memory_utilization: _Optional[float] = ..., kv_cache_gib: _Optional[float] = ..., enforce_eager: _Optional[bool] = ..., max_model_len: _Optional[int] = ..., tensor_parallel_size: _Optional[int] = ..., enable_prefix_caching: _Optional[bool] = ..., enable_sleep_mode: _Optional[bool] = ...) -> None: ...

class SimulatedEngineSpec(_message.Message):
    __slots__ = ("seconds_per_token", "max_batch_size")
    SECONDS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    seconds_per_token: float
    max_batch_size: int
    def __init__(self, seconds_per_token: _Optional[float] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class InProcessQueueSpec(_message.Message):
    __slots__ = ("max_size",)
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_size: int
    def __init__(self, max_size: _Optional[int] = ...) -> None: ...

class RedisQueueSpec(_message.Message):
    __slots__ = ("url", "password_env", "stream_prefix", "max_len", "claim_idle_ms")
    URL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_ENV_FIELD_NUMBER: _ClassVar[int]
    STREAM_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    CLAIM_IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    url: str
    password_env: str
    stream_prefix: str
    max_len: int
    claim_idle_ms: int
    def __init__(self, url: _Optional[str] = ..., password_env: _Optional[str] = ..., stream_prefix: _Optional[str] = ..., max_len: _Optional[int] = ..., claim_idle_ms: _Optional[int] = ...) -> None: ...

class DataSpec(_message.Message):
    __slots__ = ("task", "num_problems", "prompt_variants", "samples_per_variant", "reflections_per_sample", "sampling", "reflection_sampling", "max_samples_per_trace", "composition", "rationalization", "seed", "complete_missing_tags")
    TASK_FIELD_NUMBER: _ClassVar[int]
    NUM_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_VARIANT_FIELD_NUMBER: _ClassVar[int]
    REFLECTIONS_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REFLECTION_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_PER_TRACE_FIELD_NUMBER: _ClassVar[int]
    COMPOSITION_FIELD_NUMBER: _ClassVar[int]
    RATIONALIZATION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_MISSING_TAGS_FIELD_NUMBER: _ClassVar[int]
    task: str
    num_problems: int
    prompt_variants: _containers.RepeatedScalarFieldContainer[str]
    samples_per_variant: int
    reflections_per_sample: int
    sampling: SamplingSpec
    reflection_sampling: SamplingSpec
    max_samples_per_trace: int
    composition: str
    rationalization: bool
    seed: int
    complete_missing_tags: bool
    def __init__(self, task: _Optional[str] = ..., num_problems: _Optional[int] = ..., prompt_variants: _Optional[_Iterable[str]] = ..., samples_per_variant: _Optional[int] = ..., reflections_per_sample: _Optional[int] = ..., sampling: _Optional[_Union[SamplingSpec, _Mapping]] = ..., reflection_sampling: _Optional[_Union[SamplingSpec, _Mapping]] = ..., max_samples_per_trace: _Optional[int] = ..., composition: _Optional[str] = ..., rationalization: _Optional[bool] = ..., seed: _Optional[int] = ..., complete_missing_tags: _Optional[bool] = ...) -> None: ...

class LoraSpec(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskDatasetSpec(_message.Message):
    __slots__ = ("name", "path", "test_path", "hub", "config", "train_split", "test_split", "question", "answer", "id", "choices", "grader", "template")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TEST_PATH_FIELD_NUMBER: _ClassVar[int]
    HUB_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEST_SPLIT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    GRADER_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    test_path: str
    hub: str
    config: str
    train_split: str
    test_split: str
    question: str
    answer: str
    id: str
    choices: str
    grader: str
    template: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., test_path: _Optional[str] = ..., hub: _Optional[str] = ..., config: _Optional[str] = ..., train_split: _Optional[str] = ..., test_split: _Optional[str] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., id: _Optional[str] = ..., choices: _Optional[str] = ..., grader: _Optional[str] = ..., template: _Optional[str] = ...) -> None: ...

class RewardSpec(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SFTSpec(_message.Message):
    __slots__ = ("dataset", "learning_rate", "lr_scheduler", "warmup_ratio", "num_epochs", "max_length", "per_device_batch_size", "gradient_accumulation_steps", "save_steps", "precision", "adam_beta2", "weight_decay", "gradient_checkpointing", "max_examples", "lora")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    NUM_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    SAVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    num_epochs: float
    max_length: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    save_steps: int
    precision: str
    adam_beta2: float
    weight_decay: float
    gradient_checkpointing: bool
    max_examples: int
    lora: LoraSpec
    def __init__(self, dataset: _Optional[str] = ..., learning_rate: _Optional[float] = ..., lr_scheduler: _Optional[str] = ..., warmup_ratio: _Optional[float] = ..., num_epochs: _Optional[float] = ..., max_length: _Optional[int] = ..., per_device_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., save_steps: _Optional[int] = ..., precision: _Optional[str] = ..., adam_beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_checkpointing: _Optional[bool] = ..., max_examples: _Optional[int] = ..., lora: _Optional[_Union[LoraSpec, _Mapping]] = ...) -> None: ...

class GRPOSpec(_message.Message):
    __slots__ = ("task", "num_problems", "steps", "group_size", "prompts_per_step", "mini_batch_size", "learning_rate", "warmup_steps", "loss", "clip_eps_low", "clip_eps_high", "kl_beta", "filter_zero_variance", "max_staleness", "importance_weight_cap", "max_prompt_length", "max_response_length", "temperature", "top_p", "save_steps", "max_grad_norm", "epochs_per_batch", "max_tokens_per_micro_batch", "logprob_chunk_tokens", "gradient_checkpointing", "precision", "kl_estimator", "kl_in_reward", "importance_level", "clip_c", "advantage_norm", "leave_one_out", "correct_engine_mismatch", "lora", "eval_every", "eval_problems", "rewards", "mask_truncated_completions", "overlong_buffer_length", "overlong_penalty_factor")
    TASK_FIELD_NUMBER: _ClassVar[int]
    NUM_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    MINI_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CLIP_EPS_LOW_FIELD_NUMBER: _ClassVar[int]
    CLIP_EPS_HIGH_FIELD_NUMBER: _ClassVar[int]
    KL_BETA_FIELD_NUMBER: _ClassVar[int]
    FILTER_ZERO_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SAVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    KL_ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    KL_IN_REWARD_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CLIP_C_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_NORM_FIELD_NUMBER: _ClassVar[int]
    LEAVE_ONE_OUT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_ENGINE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    EVAL_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    MASK_TRUNCATED_COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    OVERLONG_BUFFER_LENGTH_FIELD_NUMBER: _ClassVar[int]
    OVERLONG_PENALTY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    task: str
    num_problems: int
    steps: int
    group_size: int
    prompts_per_step: int
    mini_batch_size: int
    learning_rate: float
    warmup_steps: int
    loss: str
    clip_eps_low: float
    clip_eps_high: float
    kl_beta: float
    filter_zero_variance: bool
    max_staleness: int
    importance_weight_cap: float
    max_prompt_length: int
    max_response_length: int
    temperature: float
    top_p: float
    save_steps: int
    max_grad_norm: float
    epochs_per_batch: int
    max_tokens_per_micro_batch: int
    logprob_chunk_tokens: int
    gradient_checkpointing: bool
    precision: str
    kl_estimator: str
    kl_in_reward: bool
    importance_level: str
    clip_c: float
    advantage_norm: str
    leave_one_out: bool
    correct_engine_mismatch: bool
    lora: LoraSpec
    eval_every: int
    eval_problems: int
    rewards: _containers.RepeatedCompositeFieldContainer[RewardSpec]
    mask_truncated_completions: bool
    overlong_buffer_length: int
    overlong_penalty_factor: float
    def __init__(self, task: _Optional[str] = ..., num_problems: _Optional[int] = ..., steps: _Optional[int] = ..., group_size: _Optional[int] = ..., prompts_per_step: _Optional[int] = ..., mini_batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., loss: _Optional[str] = ..., clip_eps_low: _Optional[float] = ..., clip_eps_high: _Optional[float] = ..., kl_beta: _Optional[float] = ..., filter_zero_variance: _Optional[bool] = ..., max_staleness: _Optional[int] = ..., importance_weight_cap: _Optional[float] = ..., max_prompt_length: _Optional[int] = ..., max_response_length: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., save_steps: _Optional[int] = ..., max_grad_norm: _Optional[float] = ..., epochs_per_batch: _Optional[int] = ..., max_tokens_per_micro_batch: _Optional[int] = ..., logprob_chunk_tokens: _Optional[int] = ..., gradient_checkpointing: _Optional[bool] = ..., precision: _Optional[str] = ..., kl_estimator: _Optional[str] = ..., kl_in_reward: _Optional[bool] = ..., importance_level: _Optional[str] = ..., clip_c: _Optional[float] = ..., advantage_norm: _Optional[str] = ..., leave_one_out: _Optional[bool] = ..., correct_engine_mismatch: _Optional[bool] = ..., lora: _Optional[_Union[LoraSpec, _Mapping]] = ..., eval_every: _Optional[int] = ..., eval_problems: _Optional[int] = ..., rewards: _Optional[_Iterable[_Union[RewardSpec, _Mapping]]] = ..., mask_truncated_completions: _Optional[bool] = ..., overlong_buffer_length: _Optional[int] = ..., overlong_penalty_factor: _Optional[float] = ...) -> None: ...

class BudgetForcingSpec(_message.Message):
    __slots__ = ("enabled", "first_budget", "total_budget")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BUDGET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BUDGET_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    first_budget: int
    total_budget: int
    def __init__(self, enabled: _Optional[bool] = ..., first_budget: _Optional[int] = ..., total_budget: _Optional[int] = ...) -> None: ...

class EvalSpec(_message.Message):
    __slots__ = ("tasks", "num_problems", "samples_per_problem", "max_tokens", "temperature", "top_p", "budget_forcing")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NUM_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FORCING_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    num_problems: int
    samples_per_problem: int
    max_tokens: int
    temperature: float
    top_p: float
    budget_forcing: BudgetForcingSpec
    def __init__(self, tasks: _Optional[_Iterable[str]] = ..., num_problems: _Optional[int] = ..., samples_per_problem: _Optional[int] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., budget_forcing: _Optional[_Union[BudgetForcingSpec, _Mapping]] = ...) -> None: ...

class TrackingSpec(_message.Message):
    __slots__ = ("backend", "project", "run_name", "completions_every", "max_completions")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_EVERY_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    project: str
    run_name: str
    completions_every: int
    max_completions: int
    def __init__(self, backend: _Optional[str] = ..., project: _Optional[str] = ..., run_name: _Optional[str] = ..., completions_every: _Optional[int] = ..., max_completions: _Optional[int] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("name", "model", "seed", "output_dir", "stages", "baseline", "transformers", "vllm", "simulated", "inprocess", "redis", "data", "sft", "grpo", "eval", "reuse_from", "tracking", "datasets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMERS_FIELD_NUMBER: _ClassVar[int]
    VLLM_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    INPROCESS_FIELD_NUMBER: _ClassVar[int]
    REDIS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SFT_FIELD_NUMBER: _ClassVar[int]
    GRPO_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    REUSE_FROM_FIELD_NUMBER: _ClassVar[int]
    TRACKING_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    seed: int
    output_dir: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    baseline: str
    transformers: TransformersEngineSpec
    vllm: VllmEngineSpec
    simulated: SimulatedEngineSpec
    inprocess: InProcessQueueSpec
    redis: RedisQueueSpec
    data: DataSpec
    sft: SFTSpec
    grpo: GRPOSpec
    eval: EvalSpec
    reuse_from: str
    tracking: TrackingSpec
    datasets: _containers.RepeatedCompositeFieldContainer[TaskDatasetSpec]
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ..., output_dir: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ..., baseline: _Optional[str] = ..., transformers: _Optional[_Union[TransformersEngineSpec, _Mapping]] = ..., vllm: _Optional[_Union[VllmEngineSpec, _Mapping]] = ..., simulated: _Optional[_Union[SimulatedEngineSpec, _Mapping]] = ..., inprocess: _Optional[_Union[InProcessQueueSpec, _Mapping]] = ..., redis: _Optional[_Union[RedisQueueSpec, _Mapping]] = ..., data: _Optional[_Union[DataSpec, _Mapping]] = ..., sft: _Optional[_Union[SFTSpec, _Mapping]] = ..., grpo: _Optional[_Union[GRPOSpec, _Mapping]] = ..., eval: _Optional[_Union[EvalSpec, _Mapping]] = ..., reuse_from: _Optional[str] = ..., tracking: _Optional[_Union[TrackingSpec, _Mapping]] = ..., datasets: _Optional[_Iterable[_Union[TaskDatasetSpec, _Mapping]]] = ...) -> None: ...
