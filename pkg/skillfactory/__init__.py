"""SkillFactory: install try → verify → retry skills into a language model without a teacher."""

__version__ = "0.1.0"
