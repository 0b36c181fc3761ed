"""``story`` in the state the reference sampler leaves a line in: a training drill.

The prompt and answer are ``story``'s. Only the words the sampler writes last are maskable
(``fill``): each step sentence bar its operand, the sign and the result. The step numbers, both
operands of each sum, the ``=`` and the final answer line stay given::

    Step 1: #########5############# 47 # 5 = ##
    Step 2: ##########8############### 52 # 8 = ##
    The answer is 44.

(``#`` marks the characters of the spans, for "She buys 5 more apples. 47 + 5 = 52" and "She
gives 8 apples to Bob. 52 - 8 = 44"; the left operand of step 2 is step 1's result, masked there
and given here. Training masks a token when any of its characters is in a span.)

The reference sampler commits a story line's step number, punctuation and operands first, and
the verb that sets the sign and the result last (docs/TRAINING.md, "In what order the sampler
writes a line"). In the test-bed family those words are trained with the operands masked too,
and a model that learned them so wrote lines whose sentence, sign and sum did not follow the
operand the sampler had already placed. With the operand given, the line the sentence copies is
fixed, and the sign and result follow from it. Trained on, never reported; scored as ``story``
(the final answer).
"""

from __future__ import annotations

import random
import re

from . import story

WORKING = re.compile(r"Step \d+: (.*) (\d+) ([+-]) (\d+) = (\d+)$")  # sentence, a, sign, b, result


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    problem = story.make_problem(rng, canvas)
    fill, pos = [], 0  # [start, end) character offsets in the answer
    for line in problem["response"].split("\n"):
        m = WORKING.match(line)
        if m:
            start, end = m.span(1)
            b = m.group(4)
            at = line.index(f" {b} ", start) + 1  # the operand inside the sentence (every form)
            fill += [[pos + start, pos + at], [pos + at + len(b), pos + end]]
            fill += [[pos + m.start(3), pos + m.end(3)], [pos + m.start(5), pos + m.end(5)]]
        pos += len(line) + 1
    return {**problem, "task": "story_signs", "fill": fill}


score = story.score
