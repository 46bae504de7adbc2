"""Cheap context analysis of a request: the numbers the scorer turns into a routing score.

Pure functions, no I/O, no state. ``extract`` takes the JSON body of a chat or completion
request; ``from_prompt`` takes a bare prompt string and runs the exact same code (offline
evaluation uses it, so it measures what the sidecar does).

Every feature is a float that is 0 for an empty request and grows with the property it names;
counts are log-compressed (``log1p``) and textual properties are shares or rates, so one long
input cannot dominate the score. ``FEATURE_NAMES`` is the order used by the vectorised paths
(``vector``, ``matrix``) and by fitted weights.

Text analysis reads at most ``ANALYSIS_CHARS`` characters (the head and the tail of the
user-side text), so the cost is bounded for very long conversations; sizes (tokens, turns)
always count everything.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FEATURE_NAMES: tuple[str, ...] = (
    # the request as a whole
    "log_prompt_tokens",
    "log_turns",
    "log_system_tokens",
    "log_max_tokens",
    "tools",
    "json_output",
    # the text (user side)
    "log_question_tokens",
    "code_blocks",
    "code_lines",
    "latex",
    "digit_share",
    "math_operators",
    "numbers",
    "quantity_relations",
    "reasoning_cues",
    "multi_part",
    "why_how",
    "wh_factual",
    "negations",
    "clauses_per_sentence",
    "words_per_sentence",
    # multiple-choice shape
    "mc_options",
    "log_option_chars",
    "option_spread",
    "numeric_options",
    "compound_options",
    "enumerated_claims",
    # wording and language
    "word_length",
    "long_words",
    "capitalised",
    "non_latin",
    # domain vocabulary (words per 10 words)
    "domain_math",
    "domain_science",
    "domain_code",
    "domain_logic",
    "domain_law",
    "domain_medicine",
    "domain_economics",
    "domain_humanities",
)

_N_REQUEST_FEATURES = 6
_N_TEXT_FEATURES = len(FEATURE_NAMES) - _N_REQUEST_FEATURES

FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

ANALYSIS_CHARS = 12_000

# --- patterns -------------------------------------------------------------------------------
# Regular expressions are the costly part: each one is a pass over the text, so what can be
# decided per line (options, list items, code lines) or per word (vocabulary) is done there.

_WORD_UNICODE = re.compile(r"[^\W\d_]+")
# Translation tables for ASCII text (characters past 127 are left as they are, but these are
# only used on ASCII text): letters kept and everything else a space; digits to "0", the rest
# a space. Splitting the result gives the words, or the runs of digits, much faster than a
# regular expression.
_ASCII_LETTERS_ONLY = "".join(c if c.isalpha() else " " for c in map(chr, range(128)))
_ASCII_DIGIT_RUNS = "".join("0" if c.isdigit() else " " for c in map(chr, range(128)))
_CAPITALISED = re.compile(r"[A-Z][a-z]{2,}")
_DIGIT_RUN = re.compile(r"[0-9]+")
# A ``$...$`` span is inline math only as Pandoc reads it: the opening ``$`` followed by a
# non-space, the closing one preceded by a non-space and not followed by a digit. Two prices in
# a sentence ("costs $68 per dozen and $2 each") are not: counting them made a third of all math
# word problems look like formulas (docs/routing-quality.md, "Math and word problems").
_LATEX = re.compile(
    r"(?<![\\$])\$(?=[^\s$])[^$\n]{0,200}(?<=[^\s$\\])\$(?![0-9])"
    r"|\\(?:frac|sum|int|sqrt|prod|lim|alpha|beta|theta|pi|cdot|times|leq|geq|neq|infty|"
    r"partial|mathbb|mathrm|begin)\b"
)
# Summation, integral, root, comparison, set, arrow and logic signs.
_MATH_SYMBOLS = frozenset(
    "\u2211\u222b\u221a\u2264\u2265\u2260\u221e\u2202\u2200\u2203\u2208\u2282\u222a\u2229\u2192\u21d2\u2283\u2228\u2227\u00ac\u2261\u00b1\u00d7\u00f7"
)
# Asking for an argument, not for a number: the phrases of math word problems ("how many",
# "calculate", "what is the value") mark no harder request than their length does, and cost
# routing quality on them (docs/routing-quality.md, "Math and word problems").
_REASONING_PHRASES = ("step by step", "step-by-step", "show that")
_OPTION = re.compile(r"\(?([A-Ja-j])[.)]\s*(\S.*)")
_LIST_ITEM = re.compile(r"(?:\d{1,2}[.)]|\(?[a-h]\)|[-*•] |part \w|step \d)", re.I)
_LIST_STARTS = frozenset("0123456789(-*\u2022pPsS")
_CLAIM_PREFIXES = (
    "I. ",
    "II. ",
    "III. ",
    "IV. ",
    "(I) ",
    "(II) ",
    "(III) ",
    "(IV) ",
    "I) ",
    "II) ",
)
_CODE_PREFIXES = (
    "def ",
    "class ",
    "import ",
    "from ",
    "#include",
    "public ",
    "private ",
    "function ",
    "return ",
    "return;",
    "for (",
    "for(",
    "while (",
    "while(",
    "if (",
    "if(",
    "var ",
    "let ",
    "const ",
    "SELECT ",
    "print(",
    "console.",
    "fn ",
    "func ",
    "package ",
    "#!/",
)
_CODE_SUFFIXES = (";", "{", "}", "):", "};", ");")
_COMPOUND = re.compile(
    r"\b(?:all of the above|none of the above|both|neither|only|true|false|I|II|III|IV)\b", re.I
)
_NUMERIC_OPTION = re.compile(
    "[\\s$\u00a3\u20ac(\u2212-]*"  # leading sign or currency
    "[\\d.,/^\u00d7x*+\\-\u2212\u03c0e\u221a ()%]+"  # a number or a small expression
    "[\\w%\u00b0/\u00b2\u00b3^ ]{0,12}$"  # and a short unit
)
_DIGITS = str.maketrans("", "", "0123456789")
_OPERATORS = str.maketrans("", "", "=+*/^<>")

# --- vocabulary -----------------------------------------------------------------------------
# Categories for the single pass over the words. Domain lists are general vocabulary of each
# field, written without looking at any labelled data; the weights decide what they are worth.

_VOCAB_GROUPS: dict[str, str] = {
    "reasoning": "prove proof derive derivation justify explain reason reasoning analyze "
    "analyse compare optimize optimise design implement debug why",
    "why_how": "why how",
    "wh_factual": "who whom whose when where which what",
    "negations": "not no never none neither nor cannot except false incorrect untrue least "
    "unlikely impossible without isn't aren't doesn't don't didn't wasn't weren't won't can't",
    "clauses": "which that whereas although though because since unless whether while if "
    "whose whom wherein whereby provided assuming given",
    # Words that relate one quantity to another: fractions and multiples, percentages,
    # comparisons, rates and what remains. In a word problem each one is a step the reader has
    # to turn into arithmetic ("half as many", "20% more than", "3 times", "how many are
    # left"), where the numbers themselves are only the operands (their count carries nothing:
    # docs/routing-quality.md, "Math and word problems"). "each" and "every" are left out: in
    # ordinary requests they quantify over things ("explain each step"), not over amounts.
    "quantity_relations": "half halves third thirds quarter quarters fourth fifth twice double "
    "triple thrice percent times remaining remainder rest left more less fewer than per total",
    "domain_math": "equation equations integer integers polynomial derivative integral matrix "
    "matrices vector vectors theorem lemma prime primes function functions algebra algebraic "
    "geometric geometry triangle angle circle radius probability probabilities variance "
    "mean median distribution random variable variables sum product ratio fraction modulo "
    "mod group groups ring field subgroup isomorphic homomorphism eigenvalue determinant "
    "logarithm exponent exponential sequence series converge limit inequality solution "
    "coefficient coefficients quadratic linear slope graph set sets subset finite infinite "
    "dimension dimensional orthogonal symmetric permutation factorial divisible digits "
    "estimator regression hypothesis statistic statistics sample samples percentile",
    "domain_science": "energy force mass velocity acceleration momentum electron electrons proton "
    "neutron atom atoms atomic molecule molecules molecular reaction reactions chemical "
    "charge magnetic electric voltage current resistance circuit wavelength frequency photon "
    "quantum gravity gravitational temperature pressure heat thermal entropy kinetic "
    "potential orbit planet planets star stars galaxy cell cells gene genes genetic dna rna "
    "protein proteins enzyme enzymes species evolution organism organisms bacteria "
    "membrane ion ions oxygen carbon hydrogen nitrogen acid acids solution concentration "
    "joules newton watts kelvin",
    "domain_code": "code program programs programming algorithm algorithms function compile "
    "compiler runtime python java javascript sql database array arrays list lists string "
    "strings integer loop loops recursion recursive variable pointer memory cache "
    "binary bit bits byte bytes software hardware processor network networks protocol "
    "server api class object objects method methods implement implementation debug bug "
    "complexity neural training dataset classifier gradient",
    "domain_logic": "premise premises conclusion conclusions argument arguments valid invalid "
    "validity sound fallacy fallacies implies implication entails entailment syllogism "
    "proposition propositions predicate tautology contradiction consistent inconsistent "
    "counterexample necessary sufficient iff therefore hence thus",
    "domain_law": "law laws legal court courts judge jury plaintiff defendant defendants "
    "statute statutes contract contracts tort torts liable liability negligence "
    "constitutional constitution amendment jurisdiction appeal appellate testimony evidence "
    "hearsay prosecution prosecutor attorney counsel lawsuit sued sue suit breach damages "
    "ownership property deed lease tenant landlord easement conveyance felony misdemeanor "
    "crime criminal guilty convicted conviction trial verdict motion statutory ordinance "
    "treaty rights",
    "domain_medicine": "patient patients clinical diagnosis diagnosed symptoms symptom disease "
    "diseases syndrome treatment therapy drug drugs dose mg medication infection chronic "
    "acute blood pressure heart cardiac renal hepatic pulmonary tumor cancer physician "
    "hospital examination laboratory serum pain fever nerve muscle muscles bone tissue "
    "pregnancy pregnant surgery injury vaccine virus viral immune nutrition vitamin "
    "diet glucose insulin",
    "domain_economics": "price prices market markets demand supply cost costs revenue profit "
    "profits inflation unemployment gdp interest rate rates tax taxes money monetary fiscal "
    "bank banks economy economic economics investment capital elasticity equilibrium "
    "consumer consumers producer firm firms monopoly competition trade tariff wage wages "
    "income budget marginal utility",
    "domain_humanities": "history historical century war empire king queen religion religious "
    "god gods church philosophy philosopher moral morality ethics ethical culture cultural "
    "society social art literature poem novel ancient medieval revolution political "
    "politics government president nation national tradition belief beliefs myth",
}

_VOCAB_SLOTS: tuple[str, ...] = tuple(_VOCAB_GROUPS)
# word -> tuple of slot indexes (a word may belong to more than one group)
_VOCAB: dict[str, tuple[int, ...]] = {}
for _slot, _group in enumerate(_VOCAB_SLOTS):
    for _w in _VOCAB_GROUPS[_group].split():
        _VOCAB[_w] = (*_VOCAB.get(_w, ()), _slot)
del _slot, _group, _w
_SLOT_REASONING = _VOCAB_SLOTS.index("reasoning")
_SLOT_WHY_HOW = _VOCAB_SLOTS.index("why_how")
_SLOT_WH_FACTUAL = _VOCAB_SLOTS.index("wh_factual")
_SLOT_NEGATIONS = _VOCAB_SLOTS.index("negations")
_SLOT_CLAUSES = _VOCAB_SLOTS.index("clauses")
_SLOT_QUANTITY_RELATIONS = _VOCAB_SLOTS.index("quantity_relations")
_DOMAIN_SLOTS = tuple(i for i, g in enumerate(_VOCAB_SLOTS) if g.startswith("domain_"))
assert [_VOCAB_SLOTS[i] for i in _DOMAIN_SLOTS] == [
    n for n in FEATURE_NAMES if n.startswith("domain_")
]

_SYSTEM_ROLES = frozenset({"system", "developer"})

# --- request reading --------------------------------------------------------------------------


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def request_text(body: Mapping[str, Any]) -> tuple[str, int]:
    """The prompt text of a chat or completion body, and its number of turns."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = [_message_text(m.get("content")) for m in messages if isinstance(m, Mapping)]
        return "\n".join(parts), len(parts)
    return _prompt_text(body.get("prompt")), 1


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        # A list of strings is a batch; a list of ints is pre-tokenised text we cannot read.
        return "\n".join(p for p in prompt if isinstance(p, str))
    return ""


def _tokens(text: str) -> float:
    """Rough token count: ~4 characters per token for Latin text, ~1 per character otherwise."""
    n = len(text)
    if n == 0:
        return 0.0
    if text.isascii():
        return n / 4.0
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars / 4.0 + (n - ascii_chars)


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if value > 0 and math.isfinite(value) else 0.0


def extract(body: Mapping[str, Any]) -> dict[str, float]:
    """Features of a chat (``messages``) or completion (``prompt``) request body."""
    return dict(zip(FEATURE_NAMES, _features(body)[0], strict=True))


def from_prompt(prompt: str) -> dict[str, float]:
    """Features of a single user message with nothing else in the request."""
    return extract({"messages": [{"role": "user", "content": prompt}]})


def vector(body: Mapping[str, Any]) -> list[float]:
    """``extract`` as a list in ``FEATURE_NAMES`` order (the scorer's fast path)."""
    return _features(body)[0]


def vector_and_text(body: Mapping[str, Any]) -> tuple[list[float], str]:
    """``vector`` and the text its textual features were computed from: the user-side text,
    at most ``ANALYSIS_CHARS`` characters of it (head and tail). The learned scorer reads its
    words from the same text, so both see the same part of a long request."""
    return _features(body)


def matrix(prompts: Iterable[str]) -> NDArray[np.float64]:
    """One row per prompt (as ``from_prompt``), columns in ``FEATURE_NAMES`` order."""
    rows = [_features({"messages": [{"role": "user", "content": p}]})[0] for p in prompts]
    if not rows:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    return np.array(rows, dtype=np.float64)


def _features(body: Mapping[str, Any]) -> tuple[list[float], str]:
    messages = body.get("messages")
    system_parts: list[str] = []
    user_parts: list[str] = []
    turns = 0
    all_chars_tokens = 0.0
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, Mapping):
                continue
            text = _message_text(m.get("content"))
            all_chars_tokens += _tokens(text)
            role = m.get("role")
            if role in _SYSTEM_ROLES:
                system_parts.append(text)
            else:
                turns += 1
                if role != "assistant":
                    user_parts.append(text)
        last_user = user_parts[-1] if user_parts else ""
    else:
        last_user = _prompt_text(body.get("prompt"))
        user_parts.append(last_user)
        all_chars_tokens = _tokens(last_user)
        turns = 1 if last_user else 0

    max_tokens = _positive_number(body.get("max_completion_tokens")) or _positive_number(
        body.get("max_tokens")
    )
    tools = body.get("tools") or body.get("functions")
    fmt = body.get("response_format")
    json_output = isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")

    text = "\n".join(user_parts) if len(user_parts) > 1 else last_user
    if len(text) > ANALYSIS_CHARS:
        half = ANALYSIS_CHARS // 2
        text = text[:half] + "\n" + text[-half:]
    out = [
        math.log1p(all_chars_tokens),
        math.log1p(turns),
        math.log1p(sum(_tokens(t) for t in system_parts)),
        math.log1p(max_tokens),
        1.0 if tools else 0.0,
        1.0 if json_output else 0.0,
    ]
    out.extend(_text_features(text))
    return out, text


def _question(lines: Sequence[str], first_option: int) -> str:
    """The question itself: the last paragraph before the answer options, or of the message
    when there are none; for a passage followed by a question, just the question."""
    end = first_option if first_option >= 0 else len(lines)
    while end > 0 and (not lines[end - 1].strip() or _is_answer_cue(lines[end - 1])):
        end -= 1
    start = end - 1
    while start > 0 and lines[start - 1].strip():
        start -= 1
    start = max(start, 0)
    para = lines[start:end]
    if len(para) > 1 and len(para[-1]) > 40:
        para = para[-1:]
    return "\n".join(para)


def _is_answer_cue(line: str) -> bool:
    s = line.strip()
    return s.endswith(":") and len(s) < 16


def _text_features(text: str) -> list[float]:
    n_chars = len(text)
    if n_chars == 0:
        return [0.0] * _N_TEXT_FEATURES
    ascii_only = text.isascii()
    lower = text.lower()
    if ascii_only:
        words = lower.translate(_ASCII_LETTERS_ONLY).split()
    else:
        words = _WORD_UNICODE.findall(lower)
    n_words = len(words)
    per_word = 10.0 / n_words if n_words else 0.0

    # Counting distinct words first (in C) makes the Python loop shorter on real text.
    counts = [0] * len(_VOCAB_SLOTS)
    long_words = 0
    get = _VOCAB.get
    for w, c in Counter(words).items():
        slots = get(w)
        if slots is not None:
            for slot in slots:
                counts[slot] += c
        if len(w) >= 9:
            long_words += c
    letters = sum(map(len, words))
    non_latin = 0 if ascii_only else letters - len("".join(words).encode("latin-1", "ignore"))

    # One pass over the lines: options, list items, enumerated claims, code.
    lines = text.split("\n")
    labels: list[str] = []
    lower_labels: list[bool] = []
    options: list[str] = []
    option_lines: list[int] = []
    list_items = claims = code_lines = fences = 0
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped:
            continue
        # Cheap character tests decide whether a regular expression is worth running.
        head = stripped[:2]
        if len(head) == 2 and (head[1] in ".)" or head[0] == "("):
            m = _OPTION.match(stripped)
        else:
            m = None
        if m is not None:
            label = m.group(1)
            labels.append(label.upper())
            lower_labels.append(label.islower())
            options.append(m.group(2))
            option_lines.append(i)
        elif head[0] in _LIST_STARTS and _LIST_ITEM.match(stripped):
            list_items += 1
        if head[0] in "I(" and stripped.startswith(_CLAIM_PREFIXES):
            claims += 1
        if stripped.startswith("```"):
            fences += 1
        elif stripped.startswith(_CODE_PREFIXES) or stripped.rstrip().endswith(_CODE_SUFFIXES):
            code_lines += 1
    claims += lower.count("statement 1") + lower.count("statement 2")

    # Options must run A, B, C... to count as a multiple-choice block; lower-case items that
    # are mostly questions ("a) what is...?", "b) why...?") are parts of a request instead.
    mc = _option_run(labels)
    if (
        mc >= 2
        and lower_labels[-mc]
        and sum(o.rstrip().endswith("?") for o in options[-mc:]) * 2 >= mc
    ):
        mc = 0
    if mc >= 2:
        opts = options[-mc:]
        first_option = option_lines[-mc]
        lengths = [len(o) for o in opts]
        mean_len = sum(lengths) / mc
        option_chars = math.log1p(mean_len)
        spread = (max(lengths) - min(lengths)) / mean_len if mean_len else 0.0
        numeric = sum(1 for o in opts if _NUMERIC_OPTION.match(o)) / mc
        compound = sum(1 for o in opts if len(o) < 40 and _COMPOUND.search(o)) / mc
    else:
        mc = 0
        first_option = -1
        option_chars = spread = numeric = compound = 0.0
        list_items += len(labels)

    # str.translate is fastest on ASCII text; on other text counting each character is.
    if ascii_only:
        digits = n_chars - len(text.translate(_DIGITS))
        operators = n_chars - len(text.translate(_OPERATORS))
    else:
        digits = sum(map(text.count, "0123456789"))
        operators = sum(map(text.count, "=+*/^<>"))
    if not digits:
        numbers = 0
    elif ascii_only:
        numbers = len(text.translate(_ASCII_DIGIT_RUNS).split())
    else:
        numbers = len(_DIGIT_RUN.findall(text))
    latex = len(_LATEX.findall(text)) if ("\\" in text or "$" in text) else 0
    if not ascii_only:
        latex += sum(map(text.count, _MATH_SYMBOLS))
    sentences = max(
        1,
        text.count(". ")
        + text.count("? ")
        + text.count("! ")
        + text.count("\n\n")
        + (1 if text.rstrip()[-1:] in ".?!" else 0),
    )
    questions = text.count("?")
    reasoning = counts[_SLOT_REASONING] + sum(map(lower.count, _REASONING_PHRASES))
    capitalised = max(0, len(_CAPITALISED.findall(text)) - sentences)
    question = _question(lines, first_option)
    return [
        math.log1p(_tokens(question)),
        math.log1p(fences // 2),
        code_lines / len(lines),
        math.log1p(latex),
        digits / n_chars,
        math.log1p(operators),
        math.log1p(numbers),
        math.log1p(counts[_SLOT_QUANTITY_RELATIONS]),
        math.log1p(reasoning),
        math.log1p(list_items + max(0, questions - 1)),
        counts[_SLOT_WHY_HOW] * per_word,
        counts[_SLOT_WH_FACTUAL] * per_word,
        counts[_SLOT_NEGATIONS] * per_word,
        counts[_SLOT_CLAUSES] / sentences,
        math.log1p(n_words / sentences),
        float(mc),
        option_chars,
        spread,
        numeric,
        compound,
        math.log1p(claims),
        letters / n_words if n_words else 0.0,
        long_words * per_word / 10.0,
        capitalised * per_word / 10.0,
        non_latin / letters if letters else 0.0,
        *(counts[slot] * per_word for slot in _DOMAIN_SLOTS),
    ]


def _option_run(labels: Sequence[str]) -> int:
    """Length of the last run of option labels A, B, C, ... in order (0 if none)."""
    run = 0
    last = 0
    for lab in labels:
        if lab == "A":
            run = 1
        elif run and ord(lab) == ord("A") + run:
            run += 1
        else:
            run = 0
        if run:
            last = run
    return last
