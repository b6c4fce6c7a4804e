"""The phrases a trace is glued with, each list a *class*: a trace draws from the class that fits.

- after a sample judged correct / incorrect: `GLUE_AFTER_CORRECT` / `GLUE_AFTER_INCORRECT`;
- `GENERIC_GLUE`, which fits after either (the released formats mix it into both classes, and use
  it alone where no reflection is shown);
- `ENDING_PHRASES`, between `</think>` and the final `<answer>`;
- `BACKTRACK_PHRASES`, after a trace that ends on an incorrect sample, before an earlier correct
  sample is restated (the released `*C*IC` format);
- `CONFIRM_PHRASES`, after two correct samples in a row (the released `*CC` format).

The wording is ours; only the classes follow the released SkillFactory code. The lists are
pairwise disjoint, so the class of a phrase in a trace can be read back from its text.
"""

from __future__ import annotations

GLUE_AFTER_INCORRECT: tuple[str, ...] = (
    "Let me try again.",
    "That does not work. Let me try a different approach.",
    "I made a mistake somewhere. Let me solve it again from the start.",
    "Let me rethink this and try once more.",
)
"""Phrases that open a new sample after one the reflection judged incorrect."""

GLUE_AFTER_CORRECT: tuple[str, ...] = (
    "Let me double-check with another approach.",
    "Let me verify this by solving it a second way.",
    "To be sure, let me work it out once more.",
    "Let me confirm this with another attempt.",
)
"""Phrases that open a new sample after one the reflection judged correct."""

GENERIC_GLUE: tuple[str, ...] = (
    "Let me go over this once more.",
    "Before I settle on anything, let me work through the problem again.",
    "Let me take another pass at this.",
    "Hold on, let me look at the problem from the beginning.",
    "One more attempt will show whether this holds up.",
    "Let me solve it again and compare.",
)
"""Phrases that open a new sample whatever the sample before it was."""

ENDING_PHRASES: tuple[str, ...] = (
    "So the final answer is:",
    "Therefore, the final answer is:",
    "The final answer is:",
)
"""Phrases between `</think>` and the final `<answer>`."""

BACKTRACK_PHRASES: tuple[str, ...] = (
    "This attempt is wrong, but an earlier attempt got it right. Let me return to that solution.",
    "That answer does not check out. I solved it correctly before, so I will go back to that work.",
    "The last attempt fails, while a previous one succeeded. Here is the earlier solution again.",
    "I got this one wrong, but one of my earlier attempts was right. Going back to it:",
)
"""Phrases that turn from a final incorrect sample back to an earlier correct one."""

CONFIRM_PHRASES: tuple[str, ...] = (
    "Both of my last attempts check out, so I am confident in this answer.",
    "This answer has held up under more than one check.",
    "I have verified this answer more than once, so I will commit to it.",
    "My recent attempts agree and survive checking; time to settle on the answer.",
)
"""Phrases that close a trace whose last two samples are both correct."""
