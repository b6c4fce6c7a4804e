"""The wire layer: how the library's objects cross process boundaries.

`messages` converts every domain object to and from its protobuf message (problems, sampling,
completions, groups, stage 1's composer contract); `weight_store` publishes policy versions as
safetensors folders on a shared volume for rollout engines to load. The learner and the samplers
meet only here.
"""
