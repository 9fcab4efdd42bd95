"""Hand-written workflows: the seeds the meta-agent starts from and the baselines evaluate.py runs.

Each file is one self-contained `solver` exactly as a meta-agent could have written it: the
environment shows a file's source text in the archive and sends that same text into the sandbox,
so no file imports anything from this repository. Files without a kind prefix (vanilla, self_refine,
llm_debate) are shared by the math, multiple-choice and DROP kinds: `prompts._specialise` rewrites
their ROLE / ANSWER_RULE / ANSWER_PATTERN lines for each kind (as written they hold the math values).
"""
