"""MGSM (grade-school math in 11 languages), as ADAS runs it.

Source: mgsm/mgsm_<lang>.tsv, no header, `question<TAB>answer`, 250 rows per language. Split: all
11 languages concatenated in ADAS's order (bn, de, en, es, fr, ja, ru, sw, te, th, zh), shuffled with
seed 0, 128 validation / next 800 test. Id: mgsm/<lang>/<row>. Score: ADAS's exact numeric string match.
"""
from __future__ import annotations

from benchmarks.common import adas_number_match, adas_split, as_text, bounded_scorer, data_file

NAME = "mgsm"
KIND = "math"
LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
FILES = tuple(f"mgsm/mgsm_{lang}.tsv" for lang in LANGUAGES)
DESCRIPTION = """
Multilingual Grade School Math (MGSM) Benchmark.
**Type**: Mathematical problem solving in 11 languages (Bengali, German, English, Spanish, French, Japanese, Russian, Swahili, Telugu, Thai, Chinese)
**Answer Type**: The answer must be an integer, written with digits only (no units, no words).
**Description**: MGSM translates 250 grade-school math word problems from GSM8K into ten languages. Each problem takes a few steps of basic arithmetic; the question is in one of the languages and the answer is a number.

Example Question:
Löse dieses Mathematikproblem.

Ein Bäcker backt jeden Morgen 48 Brötchen. Er verkauft 35 davon und verschenkt die Hälfte der übrigen an Nachbarn, wobei er abrundet. Wie viele Brötchen bleiben ihm?

Example Answer: 7
""".strip()

# The instruction ADAS puts before each question, in the question's language
# (ShengranHu/ADAS _mgsm/utils.py @d0acd49 LANG_TO_INSTRUCTIONS).
INSTRUCTIONS = {
    "en": "Solve this math problem.",
    "bn": "এই গণিতের সমস্যাটি সমাধান করুন।",
    "de": "Löse dieses Mathematikproblem.",
    "es": "Resuelve este problema matemático.",
    "fr": "Résolvez ce problème de mathématiques.",
    "ja": "この数学の問題を解いてください。",
    "ru": "Решите эту математическую задачу.",
    "sw": "Suluhisha tatizo hili la hesabu.",
    "te": "ఈ గణిత సమస్యను పరిష్కరించండి.",
    "th": "แก้ปัญหาคณิตศาสตร์นี้",
    "zh": "解决这个数学问题。",
}


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    examples = []
    for lang, name in zip(LANGUAGES, FILES):
        with open(data_file(data_dir, name, verify), encoding="utf-8") as f:
            for i, line in enumerate(f):
                question, answer = line.strip().split("\t")
                examples.append({"id": f"mgsm/{lang}/{i}", "task": f"{INSTRUCTIONS[lang]}\n\n{question}",
                                 "answer": answer, "lang": lang})
    valid, test = adas_split(examples, 128, 800)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when the prediction is the gold number as a string (commas and trailing ".0" ignored).

    >>> score("1,234.0", {"answer": "1234"})
    1.0
    """
    return float(adas_number_match(example["answer"], as_text(prediction)))
