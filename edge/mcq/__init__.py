"""Multiple-choice medical QA, the one definition every stage uses: the prompt (`prompts`), the
log-likelihood scorer (`scorer`) and answer extraction for generated replies (`extract`).

It sits above the backends (it speaks their request types) and below the stages: bench scores
with it, train renders its examples and dev-set eval with it, `models demo` asks with it.
"""
